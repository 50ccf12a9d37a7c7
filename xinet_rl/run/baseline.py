"""stable-baselines3's own ``SAC``, trained with the same budget and written as a run directory of the same shape,
so comparisons show where the library users know stands.

It is a second run writer next to :mod:`xinet_rl.run.trainer`, not an agent: it finishes through the same
:mod:`xinet_rl.run.artifacts` and its latency is timed by the same :func:`~xinet_rl.run.latency.action_latency_ms`.
"""

from __future__ import annotations

import time
from pathlib import Path

import yaml
from stable_baselines3 import SAC
from stable_baselines3.common.callbacks import CallbackList
from stable_baselines3.common.monitor import Monitor

from xinet_rl.callbacks import Evaluate, EvaluationsCSV, sb3_param_counts
from xinet_rl.config import TrainConfig
from xinet_rl.envs import make_env
from xinet_rl.run.artifacts import final_evaluation, write_run_config, write_summary
from xinet_rl.run.latency import action_latency_ms

VARIANT = "sb3-sac"


def train_sb3_sac(env_id: str, config: TrainConfig, seed: int, run_dir: Path, device: str = "cpu") -> dict:
    """Train stable-baselines3's ``SAC`` (``MlpPolicy`` at the config's actor widths) and write its run directory:
    ``config.yaml``, ``evaluations.csv`` and ``summary.json`` (no model file, no checkpoints: not resumable).

    :param env_id: the environment id
    :param config: the resolved configuration (its SAC keys, total, evaluation frequency and episodes)
    :param seed: the seed of the agent and of the training environment (evaluation: ``seed + 10000``)
    :param run_dir: the run directory
    :param device: where to train
    :return: the summary as written
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    write_run_config(run_dir, env_id, seed, config, variant=VARIANT)
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
    final = final_evaluation(model, eval_env, table, config.eval_episodes)
    widths = {"actor": list(config.actor_widths), "critic1": list(config.actor_widths),
              "critic2": list(config.actor_widths)}
    counts = sb3_param_counts(model)
    sizes = {"params_initial": counts, "params_final": counts, "widths_initial": widths, "widths_final": widths,
             "flops_initial": None, "flops_final": None, "train_flops_total": None, "prune_events": 0}
    return write_summary(run_dir, env_id, seed, model, final, elapsed, device, sizes, variant=VARIANT)


def sb3_latency_ms(run_dir: Path, calls: int = 300) -> float:
    """Batch-1 latency of ``model.predict`` (deterministic) of a baseline run's policy, in milliseconds. SB3 models
    are not saved by these runs; latency is measured on a fresh policy of the same shape.

    :param run_dir: the baseline's run directory (its ``config.yaml``)
    :param calls: timed calls
    :return: the median time of one call
    """
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    env = make_env(config["env"], seed=0)
    model = SAC("MlpPolicy", env, policy_kwargs={"net_arch": list(config["actor_widths"])}, device="cpu",
                buffer_size=1)
    obs, _ = env.reset(seed=0)
    return action_latency_ms(lambda o: model.predict(o, deterministic=True), obs, calls=calls)
