"""Guards that stop a run with a diagnosis instead of training on garbage: non-finite losses, gate parameters,
observations or rewards, and an environment that raises. The command reports them in one line with exit code 3 and
keeps the last good checkpoint."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.callbacks import BaseCallback


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite values, a failing environment): exit code 3."""


class EnvironmentFailure(TrainingError):
    """The environment raised an exception (:class:`GuardedEnv` names it): training cannot go on."""


class GuardedEnv(gym.Wrapper):
    """Turns an exception raised inside the environment into an :class:`EnvironmentFailure` naming the env."""

    def step(self, action: Any):
        try:
            return self.env.step(action)
        except TrainingError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of third-party env code is reported the same way
            raise EnvironmentFailure(f"environment {self.spec.id if self.spec else ''} raised "
                                     f"{type(exc).__name__} in step(): {exc}") from exc

    def reset(self, **kwargs: Any):
        try:
            return self.env.reset(**kwargs)
        except Exception as exc:  # noqa: BLE001
            raise EnvironmentFailure(f"environment {self.spec.id if self.spec else ''} raised "
                                     f"{type(exc).__name__} in reset(): {exc}") from exc


class FiniteObservations(BaseCallback):
    """Checks every new observation and reward for NaN or infinity, before SB3 stores the transition. At an
    episode's last step the vectorized env hands the step's observation on in ``infos["terminal_observation"]``
    (``new_obs`` is then the next episode's first), so that one is checked too."""

    def _on_step(self) -> bool:
        obs, rewards = self.locals.get("new_obs"), self.locals.get("rewards")
        terminal = [info["terminal_observation"] for info in self.locals.get("infos") or []
                    if info.get("terminal_observation") is not None]
        if any(o is not None and not np.isfinite(o).all() for o in [obs, *terminal]):
            raise TrainingError(f"non-finite observation from the environment at step {self.num_timesteps}")
        if rewards is not None and not np.isfinite(rewards).all():
            raise TrainingError(f"non-finite reward from the environment at step {self.num_timesteps}")
        return True
