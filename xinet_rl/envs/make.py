"""Environments: id validation with close matches, and float32 observations (the replay buffer's storage type)."""

from __future__ import annotations

import difflib
import importlib
import warnings

import gymnasium as gym
import numpy as np
from gymnasium.wrappers import DtypeObservation


class EnvError(ValueError):
    """An unknown or unusable environment id (a user mistake: exit code 2)."""


def check_env_id(env_id: str) -> None:
    """Known id, or ``module:Id`` whose module registers it (gymnasium's convention for third-party envs)."""
    if ":" in env_id:
        module, _, env_id = env_id.partition(":")
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise EnvError(f"cannot import module '{module}' for environment '{env_id}': {exc}") from None
    if env_id in gym.envs.registry:
        return
    matches = difflib.get_close_matches(env_id, list(gym.envs.registry), n=3, cutoff=0.6)
    hint = f" (did you mean {', '.join(matches)}?)" if matches else ""
    raise EnvError(f"unknown environment id '{env_id}'{hint}")


def make_env(env_id: str, seed: int | None = None, **kwargs) -> gym.Env:
    """``gym.make`` with float32 observations; continuous (Box) action spaces only."""
    check_env_id(env_id)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        env = gym.make(env_id, **kwargs)
    if not isinstance(env.action_space, gym.spaces.Box) or not isinstance(env.observation_space, gym.spaces.Box):
        env.close()
        raise EnvError(f"environment '{env_id}' needs Box observation and action spaces (continuous control)")
    if env.observation_space.dtype != np.float32:
        env = DtypeObservation(env, np.float32)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env
