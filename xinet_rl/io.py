"""Pickle-free files: model weights in safetensors with JSON metadata in the header, and atomic writes.

A file is written to a temporary name in the same folder, flushed to disk and renamed over the target, so a crash
leaves either the old file or the new one, never half of one. Reading never unpickles: a foreign, truncated or
corrupted file is a :class:`ModelFileError` naming the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from xinet_rl.version import __version__

FORMAT = "xinet-rl/1"


class ModelFileError(ValueError):
    """A model or checkpoint file that cannot be used (user-facing: one line, exit code 2)."""


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success fsync it and rename it over ``path``.

    The file gets the permissions a plain ``open(path, "w")`` would give it: those of the file it replaces, or for a
    new file ``0o666`` less the process's umask (``tempfile.mkstemp`` would make it ``0o600``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        mode = None
    while True:
        tmp_path = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
        except FileExistsError:
            continue
        break
    try:
        if mode is not None:
            os.fchmod(fd, mode)
    finally:
        os.close(fd)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def _versions() -> dict[str, str]:
    import gymnasium
    import stable_baselines3

    return {"xinet_rl": __version__, "torch": torch.__version__, "gymnasium": gymnasium.__version__,
            "stable_baselines3": stable_baselines3.__version__}


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, shapes, dtypes and bytes of the tensors (safetensors itself has no checksum)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def write_model_file(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    payload = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    header = {"format": FORMAT, "meta": json.dumps({**meta, "versions": _versions()}),
              "sha256": tensors_digest(payload)}
    write_bytes_atomic(path, save(payload, metadata=header))


def read_model_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and metadata of a file written by :func:`write_model_file`."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    data = path.read_bytes()
    try:
        tensors = load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8: 8 + header_len])
        info = header.get("__metadata__") or {}
    except (SafetensorError, ValueError, UnicodeDecodeError, OverflowError) as exc:
        raise ModelFileError(f"{path}: not a valid safetensors model file ({str(exc).splitlines()[0][:120]})") from None
    if info.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not an XiNet-RL model file (format {info.get('format')!r})")
    if "sha256" not in info:
        raise ModelFileError(f"{path}: the model file has no checksum (written by an older version of XiNet-RL?)")
    if info.get("sha256") != tensors_digest(tensors):
        raise ModelFileError(f"{path}: the weights do not match their checksum (corrupted file)")
    try:
        meta = json.loads(info["meta"])
    except (KeyError, json.JSONDecodeError):
        raise ModelFileError(f"{path}: the model metadata is missing or not valid JSON") from None
    if not isinstance(meta, dict):
        raise ModelFileError(f"{path}: the model metadata must be a JSON object")
    return tensors, meta
