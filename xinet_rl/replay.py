"""A replay buffer that samples with torch indexing: stable-baselines3's storage and sampling, without its copies.

SB3's :class:`~stable_baselines3.common.buffers.ReplayBuffer` gathers a batch with numpy fancy indexing and then copies
every array into a new tensor. This subclass keeps SB3's storage (float32 numpy arrays, what checkpoints save: a Box
observation of any dtype is stored as float32, the dtype the networks compute in, as SB3's policies cast it) and its
sampling random numbers, so it returns exactly the same batches (observations flattened to one row each), but gathers
rows with ``index_select`` from tensors that share the numpy memory on CPU, or from copies resident on the accelerator
(written once per added transition), so a CUDA update never moves a batch from the host.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.common.vec_env import VecNormalize


def float32_box(space: spaces.Space) -> spaces.Space:
    """A Box space of float32 with the same shape and bounds (rounded): the storage type of observations."""
    if not isinstance(space, spaces.Box) or space.dtype == np.float32:
        return space
    with np.errstate(over="ignore"):  # bounds beyond float32's range become infinite
        low, high = space.low.astype(np.float32), space.high.astype(np.float32)
    return spaces.Box(low=low, high=high, shape=space.shape, dtype=np.float32)


REPLAY_FIELDS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")


class TensorReplayBuffer(ReplayBuffer):
    """SB3's replay buffer with batches gathered by torch indexing (same batches, fewer copies).

    :param buffer_size: transitions held (SB3's, divided among the environments).
    :param observation_space: the environment's; a float Box of another dtype is stored as float32.
    :param args: SB3's ``ReplayBuffer`` arguments (action space, device, number of environments, ...).
    :param kwargs: SB3's ``ReplayBuffer`` keyword arguments.
    """

    def __init__(self, buffer_size: int, observation_space: spaces.Space, *args: Any, **kwargs: Any) -> None:
        super().__init__(buffer_size, float32_box(observation_space), *args, **kwargs)
        self._tensors: dict[str, torch.Tensor] | None = None
        self._rows_only = False  # set by draw_rows: SB3's sample returns the rows instead of the batch
        self.mirrored = self.device.type != "cpu"  # copies on the device, kept current by add()

    def stored_fields(self) -> list[str]:
        """The storage arrays this buffer has (no ``next_observations`` with ``optimize_memory_usage``)."""
        return [k for k in REPLAY_FIELDS if getattr(self, k, None) is not None]

    def tensors(self) -> dict[str, torch.Tensor]:
        """Each storage array as a ``(buffer_size * n_envs, -1)`` tensor on the buffer's device: a view of the numpy
        memory on CPU, a copy on an accelerator (made on first use, kept current by :meth:`add`)."""
        if self._tensors is None:
            rows = self.buffer_size * self.n_envs
            found = {k: getattr(self, k) for k in self.stored_fields()}
            if self.mirrored:
                self._tensors = {k: torch.from_numpy(v).reshape(rows, -1).to(self.device, copy=True)
                                 for k, v in found.items()}
            else:
                self._tensors = {k: torch.from_numpy(v).reshape(rows, -1) for k, v in found.items()}
        return self._tensors

    def storage_changed(self) -> None:
        """Call after writing the numpy storage directly (restoring a checkpoint): device copies are remade."""
        if self.mirrored:
            self._tensors = None

    def add(self, obs: np.ndarray, next_obs: np.ndarray, action: np.ndarray, reward: np.ndarray, done: np.ndarray,
            infos: list[dict[str, Any]]) -> None:
        pos = self.pos
        super().add(obs, next_obs, action, reward, done, infos)
        if self._tensors is not None and self.mirrored:
            changed = [pos, (pos + 1) % self.buffer_size] if self.optimize_memory_usage else [pos]
            for key, tensor in self._tensors.items():
                for row in changed:
                    tensor[row * self.n_envs:(row + 1) * self.n_envs].copy_(
                        torch.from_numpy(getattr(self, key)[row]).reshape(self.n_envs, -1), non_blocking=True)

    def draw_rows(self, batch_size: int) -> np.ndarray:
        """SB3's random numbers for one batch, as storage rows: a ``(2, batch_size)`` int64 array of the rows of the
        observations and of the next observations (the same rows where next observations are stored). What
        :meth:`sample` gathers; a CUDA graph of the update copies it in and gathers on the device. The draw is SB3's
        own ``sample``, stopped before it gathers."""
        self._rows_only = True
        try:
            return super().sample(batch_size)  # type: ignore[return-value]  # _get_samples returns the rows
        finally:
            self._rows_only = False

    def _rows(self, batch_inds: np.ndarray) -> np.ndarray:
        env_indices = np.random.randint(0, high=self.n_envs, size=(len(batch_inds),))  # SB3's draw, kept for its RNG
        rows = batch_inds * self.n_envs + env_indices
        next_rows = ((batch_inds + 1) % self.buffer_size) * self.n_envs + env_indices if self.optimize_memory_usage \
            else rows
        return np.stack([rows, next_rows]).astype(np.int64)

    def gather(self, rows: torch.Tensor) -> ReplayBufferSamples:
        """The batch at the rows given by :meth:`draw_rows` (a tensor on the buffer's device)."""
        t = self.tensors()
        obs_rows, next_rows = rows[0], rows[1]
        next_source = t["observations"] if self.optimize_memory_usage else t["next_observations"]
        dones = t["dones"].index_select(0, obs_rows)
        if "timeouts" in t and self.handle_timeout_termination:
            dones = dones * (1 - t["timeouts"].index_select(0, obs_rows))
        return ReplayBufferSamples(t["observations"].index_select(0, obs_rows), t["actions"].index_select(0, obs_rows),
                                   next_source.index_select(0, next_rows), dones, t["rewards"].index_select(0, obs_rows))

    def _get_samples(self, batch_inds: np.ndarray, env: VecNormalize | None = None) -> ReplayBufferSamples:
        if self._rows_only:
            return self._rows(batch_inds)  # type: ignore[return-value]
        if env is not None:  # normalisation is numpy code in SB3: keep its path (float32, one row per observation)
            data = super()._get_samples(batch_inds, env)
            return ReplayBufferSamples(data.observations.float().flatten(1), data.actions.float(),
                                       data.next_observations.float().flatten(1), data.dones.float(),
                                       data.rewards.float())
        return self.gather(torch.from_numpy(self._rows(batch_inds)).to(self.device, non_blocking=True))

__all__ = ["REPLAY_FIELDS", "TensorReplayBuffer", "float32_box"]
