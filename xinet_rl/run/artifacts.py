"""What every run writes the same way, whichever agent it trained: the resolved ``config.yaml``, the final
evaluation (a row of ``evaluations.csv``) and ``summary.json``.

The XiSAC trainer (:mod:`xinet_rl.run.trainer`) and the stable-baselines3 baseline (:mod:`xinet_rl.run.baseline`)
both finish through these functions, so that their run directories have one shape and the comparison reads both alike.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import yaml
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.evaluation import evaluate_policy

from xinet_rl.callbacks import EvaluationsCSV
from xinet_rl.config import TrainConfig
from xinet_rl.io import write_text_atomic


def write_run_config(run_dir: Path, env_id: str, seed: int, config: TrainConfig, **replace: Any) -> None:
    """``config.yaml``: the environment, the seed and every config key, in the config's order.

    :param run_dir: the run directory
    :param env_id: the environment id
    :param seed: the run's seed
    :param config: the resolved configuration
    :param replace: keys whose recorded value differs from the config's (e.g. ``variant="sb3-sac"``)
    """
    settings = {"env": env_id, "seed": seed, **asdict(config), **replace}
    write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(settings, sort_keys=False))


def final_evaluation(model: BaseAlgorithm, eval_env: gym.Env, table: EvaluationsCSV, episodes: int) -> dict:
    """The evaluation of the final policy: the table's last row where it was evaluated at the final step already,
    else a new evaluation, appended to the table.

    :param model: the trained model
    :param eval_env: the evaluation environment (a ``Monitor``)
    :param table: the run's ``evaluations.csv``
    :param episodes: deterministic evaluation episodes
    :return: the row (``return_mean``, ``return_std``, ...)
    """
    if table.last_eval_step != model.num_timesteps:  # the final policy is always evaluated
        returns, _ = evaluate_policy(model, eval_env, n_eval_episodes=episodes, deterministic=True,
                                     return_episode_rewards=True)
        return table.append_eval(model.num_timesteps, np.asarray(returns), model)
    return table.last_eval


def write_summary(run_dir: Path, env_id: str, seed: int, model: BaseAlgorithm, final: dict, elapsed: float,
                  device: str | torch.device, sizes: dict[str, Any], variant: str | None = None) -> dict:
    """``summary.json``: what the run reached and what it cost.

    :param run_dir: the run directory
    :param env_id: the environment id
    :param seed: the run's seed
    :param model: the trained model
    :param final: the final evaluation (:func:`final_evaluation`)
    :param elapsed: training wall time in seconds
    :param device: where it trained
    :param sizes: the agent's own figures, in order after the speed (parameters, widths, FLOPs, pruning)
    :param variant: recorded after the seed where given (runs whose ``config.yaml`` variant is not an XiSAC one)
    :return: the summary as written
    """
    summary = {"env": env_id, "seed": seed, **({"variant": variant} if variant is not None else {}),
               "total_steps": int(model.num_timesteps),
               "final_eval_return_mean": final["return_mean"], "final_eval_return_std": final["return_std"],
               "steps_per_second": round(model.num_timesteps / max(elapsed, 1e-9), 2),
               "wall_seconds": round(elapsed, 1), **sizes,
               "device": str(device), "torch_threads": torch.get_num_threads()}
    write_text_atomic(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
