"""stable-baselines3's own ``SAC``, trained with the same budget and written as a run directory of the same shape,
so comparisons show where the library users know stands."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import yaml
from stable_baselines3 import SAC
from stable_baselines3.common.callbacks import CallbackList
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

from xinet_rl.callbacks import Evaluate, EvaluationsCSV, sb3_param_counts
from xinet_rl.config import TrainConfig
from xinet_rl.envs import make_env
from xinet_rl.io import write_text_atomic


def train_sb3_sac(env_id: str, config: TrainConfig, seed: int, run_dir: Path, device: str = "cpu") -> dict:
    run_dir.mkdir(parents=True, exist_ok=True)
    settings = {"env": env_id, "seed": seed, **asdict(config), "variant": "sb3-sac"}
    write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(settings, sort_keys=False))
    env, eval_env = make_env(env_id, seed=seed), Monitor(make_env(env_id, seed=seed + 10_000))
    model = SAC("MlpPolicy", env, learning_rate=config.learning_rate, buffer_size=config.buffer_size,
                learning_starts=config.learning_starts, batch_size=config.batch_size, tau=config.tau,
                gamma=config.gamma, seed=seed, device=device, policy_kwargs={"net_arch": list(config.actor_widths)})
    table = EvaluationsCSV(run_dir / "evaluations.csv")
    model.update_seconds = None  # read by the evaluation table
    start = time.perf_counter()
    model.learn(config.total_steps, callback=CallbackList([Evaluate(eval_env, config.eval_freq,
                                                                    config.eval_episodes, table)]))
    elapsed = time.perf_counter() - start
    if table.last_eval_step != model.num_timesteps:
        returns, _ = evaluate_policy(model, eval_env, n_eval_episodes=config.eval_episodes, deterministic=True,
                                     return_episode_rewards=True)
        final = table.append_eval(model.num_timesteps, np.asarray(returns), model)
    else:
        final = table.last_eval
    widths = {"actor": list(config.actor_widths), "critic1": list(config.actor_widths),
              "critic2": list(config.actor_widths)}
    counts = sb3_param_counts(model)
    summary = {"env": env_id, "seed": seed, "variant": "sb3-sac", "total_steps": int(model.num_timesteps),
               "final_eval_return_mean": final["return_mean"], "final_eval_return_std": final["return_std"],
               "steps_per_second": round(model.num_timesteps / elapsed, 2), "wall_seconds": round(elapsed, 1),
               "params_initial": counts, "params_final": counts, "widths_initial": widths, "widths_final": widths,
               "flops_initial": None, "flops_final": None, "train_flops_total": None, "prune_events": 0,
               "device": str(device), "torch_threads": torch.get_num_threads()}
    write_text_atomic(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def sb3_latency_ms(run_dir: Path, calls: int = 300) -> float:
    """SB3 models are not saved by these runs; latency is measured on a fresh policy of the same shape."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    env = make_env(config["env"], seed=0)
    model = SAC("MlpPolicy", env, policy_kwargs={"net_arch": list(config["actor_widths"])}, device="cpu",
                buffer_size=1)
    obs, _ = env.reset(seed=0)
    times = []
    for i in range(calls + 20):
        t = time.perf_counter()
        model.predict(obs, deterministic=True)
        if i >= 20:
            times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times))
