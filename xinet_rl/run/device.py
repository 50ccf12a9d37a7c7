"""Which torch device a ``--device`` choice names, decided once, so that every command treats ``auto`` and a missing
CUDA device alike."""

from __future__ import annotations

import torch

from xinet_rl.run.errors import UsageError


def resolve_device(name: str) -> torch.device:
    """``auto``, ``cpu`` or ``cuda``; asking for CUDA on a machine without it is a user error (exit 2).

    :param name: ``auto`` (CUDA where available, else the CPU), ``cpu`` or ``cuda``
    :return: the device
    """
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was requested but no CUDA device is available")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
