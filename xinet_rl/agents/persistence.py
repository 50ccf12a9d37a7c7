"""What an :class:`~xinet_rl.agents.xisac.XiSAC` writes and reads besides its weights: where a model file is, the
spaces as JSON, and the assembly of a checkpoint (optimizer states, replay rows, every RNG, the environment and the
counters of SB3's base class) and its restoration, so that a resumed run continues bit for bit.

The file formats themselves are :mod:`xinet_rl.io` (model files) and :mod:`xinet_rl.checkpoint` (checkpoint
directories); this module decides what goes into them. It reaches into stable-baselines3's private state
(``_last_obs``, ``_episode_num``...), since exact resume needs it, and keeps that reach in one place.
"""

from __future__ import annotations

import zipfile
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv
from torch import Tensor

from xinet_rl.checkpoint import CheckpointError, env_state, rng_state, set_env_state, set_rng_state
from xinet_rl.io import ModelFileError, read_model_file


def named_optimizers(policy: Any) -> dict[str, torch.optim.Optimizer]:
    """The policy's optimizers by the names a checkpoint stores them under (the ones the model has)."""
    p = policy
    named = {"ofenet": p.ofenet_optimizer, "actor": p.actor_optimizer, "critic": p.critic_optimizer,
             "ent_coef": p.ent_coef_optimizer, "gate": p.gate_optimizer}
    return {name: optimizer for name, optimizer in named.items() if optimizer is not None}


def checkpoint_env(model: OffPolicyAlgorithm) -> Any:
    """The one environment whose state a checkpoint holds. Exact resume is guaranteed for one environment in a
    ``DummyVecEnv`` (what a plain gymnasium environment is wrapped in) and nothing else: the states of several
    environments, of environments in other processes and of VecEnv wrappers (``VecNormalize``'s statistics)
    are not saved, so checkpoints of those are refused (:class:`CheckpointError`)."""
    env = model.env
    if not isinstance(env, DummyVecEnv) or env.num_envs != 1:
        what = "no environment" if env is None else (
            f"{env.num_envs} environments" if env.num_envs != 1 else f"a {type(env).__name__}")
        raise CheckpointError(f"checkpoints (exact resume) need one environment in a DummyVecEnv, this model has "
                              f"{what}: save() keeps the weights")
    return env.envs[0]


def checkpoint_contents(model: OffPolicyAlgorithm, metadata: dict[str, Any], extra: dict[str, Any] | None = None
                        ) -> tuple[dict[str, Tensor], dict[str, np.ndarray], dict[str, np.ndarray], dict[str, Any]]:
    """``(tensors, replay, env_arrays, meta)`` of a checkpoint of ``model`` (an XiSAC) for
    :func:`~xinet_rl.checkpoint.write_checkpoint`.

    :param model: the agent, between environment steps (after the update of the last step).
    :param metadata: the model file's metadata (``XiSAC.metadata``), the start of ``meta``.
    :param extra: entries added to ``meta`` last (the run layer's own state).
    """
    tensors = {f"policy.{k}": v for k, v in model.policy.state_dict().items()}
    optimizers = {}
    for name, optimizer in named_optimizers(model.policy).items():
        state = optimizer.state_dict()
        optimizers[name] = {"param_groups": state["param_groups"],
                            "state": {str(i): sorted(entry) for i, entry in state["state"].items()}}
        for i, entry in state["state"].items():
            for key, value in entry.items():
                tensors[f"optim.{name}.{i}.{key}"] = torch.as_tensor(value)
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.gates"] = model.updater.gate_rng.get_state()
    buffer = model.replay_buffer
    # with optimize_memory_usage the row at ``pos`` already holds the last next observation
    size = buffer.buffer_size if buffer.full else min(buffer.pos + int(buffer.optimize_memory_usage),
                                                      buffer.buffer_size)
    replay = {k: getattr(buffer, k)[:size] for k in buffer.stored_fields()}
    env_meta, env_arrays = env_state(checkpoint_env(model))
    mask_rng = model.updater.mask_rng
    env_arrays["last_obs"] = np.asarray(model._last_obs)
    env_arrays["last_episode_starts"] = np.asarray(model._last_episode_starts)
    meta = {**metadata, "optimizers": optimizers, "rng": rng_state(),
            "action_space_rng": model.action_space.np_random.bit_generator.state, "env": env_meta,
            "mask_rng": mask_rng.state if isinstance(mask_rng, np.random.BitGenerator) else None,
            "replay": {"pos": int(buffer.pos), "full": bool(buffer.full)},
            "episode_num": int(model._episode_num), "ep_info_buffer": list(model.ep_info_buffer or []),
            "prune_events": model.prune_events, "update_seconds": model.update_seconds, **(extra or {})}
    return tensors, replay, env_arrays, meta


def restore_checkpoint(model: OffPolicyAlgorithm, path: str | Path, tensors: dict[str, Tensor], replay: Any,
                       env_arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Put a checkpoint's contents (as :func:`~xinet_rl.checkpoint.read_checkpoint` returns them) into ``model``, an
    XiSAC rebuilt at the checkpoint's widths; :class:`CheckpointError` naming ``path`` where they do not fit."""
    train_env = checkpoint_env(model)
    try:
        model.policy.load_state_dict({k[7:]: v for k, v in tensors.items() if k.startswith("policy.")})
        for name, optimizer in named_optimizers(model.policy).items():
            saved = meta["optimizers"][name]
            state = {int(i): {key: tensors[f"optim.{name}.{i}.{key}"] for key in keys}
                     for i, keys in saved["state"].items()}
            optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
        torch.set_rng_state(tensors["rng.torch"])
        model.updater.gate_rng.set_state(tensors["rng.gates"])
        if isinstance(model.updater.mask_rng, np.random.BitGenerator) and meta.get("mask_rng") is not None:
            model.updater.mask_rng.state = meta["mask_rng"]
        set_rng_state(meta["rng"])
        model.action_space.np_random.bit_generator.state = meta["action_space_rng"]
        buffer = model.replay_buffer
        for key in buffer.stored_fields():
            replay.read_into(key, getattr(buffer, key))
        buffer.storage_changed()
        buffer.pos, buffer.full = int(meta["replay"]["pos"]), bool(meta["replay"]["full"])
        set_env_state(train_env, meta["env"], env_arrays)
        model._last_obs = env_arrays["last_obs"]
        model._last_episode_starts = env_arrays["last_episode_starts"]
        model._episode_num = int(meta["episode_num"])
        model.ep_info_buffer = deque(meta["ep_info_buffer"], maxlen=model._stats_window_size)
        model.ep_success_buffer = deque(maxlen=model._stats_window_size)
        model.prune_events = list(meta["prune_events"])
        model.update_seconds = meta["update_seconds"]
    except (KeyError, TypeError, ValueError, RuntimeError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path}: does not match its model ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:120]})") from None


def model_path(path: str | Path, for_writing: bool = False) -> Path:
    """A model file's path with stable-baselines3's habits. Writing: a path without a suffix gets ``.zip``, as SB3's
    ``save`` does (``best_model`` -> ``best_model.zip``); any suffix is kept. Reading: the path itself, else a run
    directory's ``model.safetensors``, else the path with ``.zip`` added, else (a ``.zip`` path) without it; none of
    them there: the path as given (and the reader reports it missing)."""
    path = Path(path)
    if not path.name:
        return path
    if for_writing:
        return path if path.suffix else path.with_name(path.name + ".zip")
    if path.is_file():
        return path
    candidates = [path / "model.safetensors", path.with_name(path.name + ".zip")]
    if path.suffix == ".zip":
        candidates.append(path.with_suffix(""))
    return next((c for c in candidates if c.is_file()), path)


def read_model(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """:func:`~xinet_rl.io.read_model_file`, naming a zip archive (stable-baselines3's own format) for what it is."""
    try:
        with open(path, "rb") as handle:
            zipped = handle.read(4) == b"PK\x03\x04"
    except OSError:
        zipped = False  # the reader reports it
    if zipped:
        raise ModelFileError(f"{path}: a zip archive (a stable-baselines3 model?), not an XiSAC model file: XiSAC "
                             f"saves safetensors whatever the suffix, and never unpickles")
    return read_model_file(path)


def same_but_float_dtype(a: spaces.Space, b: spaces.Space) -> bool:
    """Two Box spaces that differ at most in their float dtype (and the rounding of their bounds to it)."""
    return (isinstance(a, spaces.Box) and isinstance(b, spaces.Box) and a.shape == b.shape and a.dtype != b.dtype
            and np.issubdtype(a.dtype, np.floating) and np.issubdtype(b.dtype, np.floating)
            and np.allclose(a.low.astype(np.float64), b.low.astype(np.float64), rtol=1e-6)
            and np.allclose(a.high.astype(np.float64), b.high.astype(np.float64), rtol=1e-6))


def space_to_json(space: spaces.Box) -> dict[str, Any]:
    """A Box space as JSON (bounds, shape, dtype): model files and checkpoints hold no pickles."""
    return {"low": space.low.tolist(), "high": space.high.tolist(), "shape": list(space.shape),
            "dtype": str(space.dtype)}


def space_from_json(data: dict[str, Any]) -> spaces.Box:
    """The Box space :func:`space_to_json` wrote."""
    dtype = np.dtype(data["dtype"])
    low = np.asarray(data["low"], dtype=dtype).reshape(data["shape"])
    high = np.asarray(data["high"], dtype=dtype).reshape(data["shape"])
    return spaces.Box(low=low, high=high, dtype=dtype)


__all__ = ["checkpoint_contents", "checkpoint_env", "model_path", "named_optimizers", "read_model", "restore_checkpoint",
           "same_but_float_dtype", "space_from_json", "space_to_json"]
