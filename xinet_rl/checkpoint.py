"""Crash-safe checkpoints of a whole training run, and exact resume.

A checkpoint is a directory ``checkpoints/step_NNNNNNNNNN/`` holding ``state.safetensors`` (model, optimizer states,
torch RNG states), ``replay.npz`` (the filled part of the replay buffer, plain NumPy arrays), ``env.npz`` (the
MuJoCo state) and ``meta.json`` (counters, NumPy/Python/space RNG states, environment wrappers' counters), plus a
``manifest.json`` with every file's size and SHA-256. It is written into a temporary directory, each file fsynced,
and renamed into place: a crash leaves the previous checkpoint untouched. Loading checks the manifest first and never
unpickles anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import zipfile
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from stable_baselines3.common.monitor import Monitor

from xinet_rl.io import ModelFileError

CHECKPOINT_FORMAT = "xinet-rl-checkpoint/1"
FILES = ("state.safetensors", "replay.npz", "env.npz", "meta.json")


class CheckpointError(ModelFileError):
    """A checkpoint that fails validation (missing, truncated, corrupted or foreign files)."""


# ----- environment state ------------------------------------------------------------------------------------------
def _wrappers(env: gym.Env):
    while True:
        yield env
        if not isinstance(env, gym.Wrapper):
            return
        env = env.env


def env_state(env: gym.Env) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """JSON-able counters and RNG state of an environment and its wrappers, and its MuJoCo state (exact: includes
    the solver's warm start)."""
    meta: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    for layer in _wrappers(env):
        if isinstance(layer, gym.wrappers.TimeLimit):
            meta["elapsed_steps"] = layer._elapsed_steps
        if isinstance(layer, Monitor):
            meta["monitor"] = {"rewards": [float(r) for r in layer.rewards], "needs_reset": layer.needs_reset,
                               "total_steps": layer.total_steps}
    base = env.unwrapped
    if base._np_random is not None:
        meta["np_random"] = base.np_random.bit_generator.state
    if hasattr(base, "model") and hasattr(base, "data"):
        import mujoco

        kind = mujoco.mjtState.mjSTATE_INTEGRATION
        state = np.empty(mujoco.mj_stateSize(base.model, kind))
        mujoco.mj_getState(base.model, base.data, state, kind)
        arrays["mujoco_state"] = state
    return meta, arrays


def set_env_state(env: gym.Env, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    for layer in _wrappers(env):
        if isinstance(layer, gym.wrappers.TimeLimit) and "elapsed_steps" in meta:
            layer._elapsed_steps = meta["elapsed_steps"]
        if isinstance(layer, Monitor) and "monitor" in meta:
            layer.rewards = list(meta["monitor"]["rewards"])
            layer.needs_reset = bool(meta["monitor"]["needs_reset"])
            layer.total_steps = int(meta["monitor"]["total_steps"])
    base = env.unwrapped
    if "np_random" in meta:
        base.np_random.bit_generator.state = meta["np_random"]
    if "mujoco_state" in arrays:
        import mujoco

        mujoco.mj_setState(base.model, base.data, arrays["mujoco_state"], mujoco.mjtState.mjSTATE_INTEGRATION)
        mujoco.mj_forward(base.model, base.data)


# ----- RNG state --------------------------------------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {"numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
            "python": [version, list(internal), gauss]}


def set_rng_state(state: dict[str, Any]) -> None:
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


# ----- files ------------------------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Checkpoint directories of a run, newest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_")), reverse=True)


def write_checkpoint(run_dir: Path, step: int, tensors: dict[str, torch.Tensor], arrays: dict[str, np.ndarray],
                     env_arrays: dict[str, np.ndarray], meta: dict[str, Any], keep: int) -> Path:
    """Write a checkpoint atomically, then delete all but the newest ``keep``."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp_step_*"):  # left by a process killed while writing (one writer per run)
        shutil.rmtree(stale, ignore_errors=True)
    final = root / f"step_{step:010d}"
    tmp = root / f".tmp_step_{step:010d}_{os.getpid()}"
    tmp.mkdir()
    try:
        # safetensors' save_file creates its file 0600; written here, the file gets the umask's permissions
        (tmp / "state.safetensors").write_bytes(save({k: v.detach().cpu().contiguous().clone()
                                                      for k, v in tensors.items()}))
        np.savez(tmp / "replay.npz", **arrays)
        np.savez(tmp / "env.npz", **env_arrays)
        (tmp / "meta.json").write_text(json.dumps({"format": CHECKPOINT_FORMAT, **meta}))
        manifest = {"format": CHECKPOINT_FORMAT, "step": step,
                    "files": {name: {"size": (tmp / name).stat().st_size, "sha256": _sha256(tmp / name)}
                              for name in FILES}}
        (tmp / "manifest.json").write_text(json.dumps(manifest))
        for name in FILES + ("manifest.json",):
            _fsync(tmp / name)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync(root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for old in checkpoint_dirs(run_dir)[keep:]:
        shutil.rmtree(old, ignore_errors=True)
    return final


class ReplayFile:
    """The replay arrays of a checkpoint (``replay.npz``), read field by field straight into the buffer's storage, so
    that resuming a run with a full buffer needs no second copy of it in memory.

    :param path: the checkpoint's ``replay.npz``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        with zipfile.ZipFile(path) as archive:
            self.files = [name[:-4] for name in archive.namelist() if name.endswith(".npy")]

    def read_into(self, key: str, out: np.ndarray) -> int:
        """Copy field ``key`` into the first rows of ``out`` (same dtype and row shape); returns the rows read."""
        with zipfile.ZipFile(self.path) as archive, archive.open(f"{key}.npy") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran_order, dtype = read_header(handle)
            if (fortran_order or dtype != out.dtype or tuple(shape[1:]) != out.shape[1:] or not shape
                    or shape[0] > out.shape[0]):
                raise ValueError(f"replay field {key} is {dtype}{list(shape)}, the buffer holds {out.dtype}"
                                 f"{list(out.shape)}")
            rows = out[: shape[0]]
            assert rows.flags.c_contiguous, "replay storage must be C-contiguous"
            target = memoryview(rows.reshape(-1).view(np.uint8))
            filled = 0
            while filled < len(target):
                count = handle.readinto(target[filled: filled + (16 << 20)])
                if not count:
                    raise ValueError(f"replay field {key} is truncated")
                filled += count
            return int(shape[0])


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], ReplayFile, dict[str, np.ndarray],
                                         dict[str, Any]]:
    """Validate a checkpoint against its manifest and read it (no pickle anywhere). The replay arrays are read
    later, into the buffer (:class:`ReplayFile`)."""
    path = Path(path)
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: manifest.json is missing or not valid JSON ({type(exc).__name__})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not an XiNet-RL checkpoint")
    files = manifest.get("files")
    if not isinstance(files, dict) or set(files) != set(FILES):
        raise CheckpointError(f"{path}: manifest.json does not list the checkpoint's files")
    for name, entry in files.items():
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"{file}: missing")
        if not isinstance(entry, dict) or file.stat().st_size != entry.get("size"):
            raise CheckpointError(f"{file}: truncated or resized")
        if _sha256(file) != entry.get("sha256"):
            raise CheckpointError(f"{file}: contents do not match the manifest (corrupted)")
    try:
        tensors = load_file(str(path / "state.safetensors"))
        arrays = ReplayFile(path / "replay.npz")
        with np.load(path / "env.npz", allow_pickle=False) as data:
            env_arrays = {k: data[k] for k in data.files}
        meta = json.loads((path / "meta.json").read_text())
    except (SafetensorError, ValueError, OSError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path}: unreadable ({str(exc).splitlines()[0][:120]})") from None
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path / 'meta.json'}: wrong schema")
    return tensors, arrays, env_arrays, meta
