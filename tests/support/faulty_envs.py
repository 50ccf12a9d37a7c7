"""Small environments that misbehave on purpose, registered for the reliability tests (``faulty_envs:NanObs-v0``)."""

import gymnasium as gym
import numpy as np


class Faulty(gym.Env):
    """A 3-d point mass; after ``fail_at`` steps it returns NaN observations or raises, as configured."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def __init__(self, fail_at: int = 10**9, mode: str = "nan_obs") -> None:
        self.fail_at, self.mode, self.steps = fail_at, mode, 0
        self.state = np.zeros(3, np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.state = self.np_random.normal(size=3).astype(np.float32)
        return self.state.copy(), {}

    def step(self, action):
        self.steps += 1
        self.state = (0.9 * self.state + 0.1 * np.concatenate([action, [0.0]])).astype(np.float32)
        obs = self.state.copy()
        if self.steps >= self.fail_at:
            if self.mode == "raise":
                raise RuntimeError("simulator exploded")
            obs[0] = np.nan
        return obs, float(-np.sum(self.state**2)), False, False, {}


# NanObs fails at an episode's last step (700): its observation is the terminal one, which the vectorized env hands on
# in ``infos`` while ``new_obs`` is the next episode's first (the guard must check both).
gym.register("NanObs-v0", entry_point=Faulty, max_episode_steps=100, kwargs={"fail_at": 700, "mode": "nan_obs"})
gym.register("Raises-v0", entry_point=Faulty, max_episode_steps=100, kwargs={"fail_at": 700, "mode": "raise"})
