"""A saved policy (a run directory or a model file) run on a fresh environment: its return over episodes, its size
and its batch-1 inference latency, as the one result ``xinet-eval`` prints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

from xinet_rl.agents.xisac import XiSAC
from xinet_rl.envs import check_env_id, make_env
from xinet_rl.run.latency import action_latency_ms
from xinet_rl.run.paths import resolve_env_id, resolve_model_path
from xinet_rl.run.video import make_video_env


def evaluate_saved(path: Path, episodes: int = 10, seed: int = 0, env_id: str | None = None,
                   deterministic: bool = True, video: str | None = None) -> dict:
    """Evaluate a saved XiSAC policy on the CPU.

    :param path: run directory (its ``model.safetensors``) or model file
    :param episodes: evaluation episodes
    :param seed: seed of the environment and of sampled actions
    :param env_id: the environment (default: the one the model was trained on)
    :param deterministic: the mean action (else sampled actions)
    :param video: record MP4 videos of the episodes into this folder
    :return: ``env``, ``model``, ``episodes``, ``deterministic``, ``return_mean``, ``return_std``, ``returns``,
        ``episode_lengths``, ``params_deploy``, ``params_train``, ``latency_ms`` (median of 300 ``predict`` calls),
        ``torch_threads``, and ``video_dir`` with ``video``
    """
    model_path = resolve_model_path(path)
    model = XiSAC.load(model_path, device="cpu")
    env_id = resolve_env_id(path, model, env_id)
    check_env_id(env_id)
    env = make_video_env(env_id, seed, video, episodes) if video else make_env(env_id, seed=seed)
    env.action_space.seed(seed)
    torch.manual_seed(seed)
    returns, lengths = evaluate_policy(model, Monitor(env), n_eval_episodes=episodes, deterministic=deterministic,
                                       return_episode_rewards=True)
    obs, _ = make_env(env_id, seed=seed).reset(seed=seed)
    latency = action_latency_ms(lambda o: model.predict(o, deterministic=deterministic), obs)
    result = {"env": env_id, "model": str(model_path), "episodes": episodes, "deterministic": deterministic,
              "return_mean": float(np.mean(returns)), "return_std": float(np.std(returns)),
              "returns": [float(r) for r in returns], "episode_lengths": [int(n) for n in lengths],
              "params_deploy": model.policy.param_counts()["deploy"],
              "params_train": model.policy.param_counts()["train"],
              "latency_ms": round(latency, 4), "torch_threads": torch.get_num_threads()}
    env.close()
    if video:
        result["video_dir"] = str(Path(video).resolve())
    return result
