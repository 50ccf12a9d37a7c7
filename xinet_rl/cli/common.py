"""What every command shares: user errors become one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import sys
from typing import Callable, NoReturn

import torch

from xinet_rl.config import ConfigError
from xinet_rl.envs.make import EnvError
from xinet_rl.guards import TrainingError
from xinet_rl.io import ModelFileError
from xinet_rl.memory import keep_freed_memory
from xinet_rl.report.runs import RunError

USER_ERRORS = (ConfigError, EnvError, ModelFileError, RunError)


class UsageError(ValueError):
    """A bad command line (user mistake: exit code 2)."""


def fail(prog: str, message: str, code: int = 2) -> NoReturn:
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def run_main(prog: str, body: Callable[[], int | None]) -> None:
    keep_freed_memory()  # updates reuse their memory instead of faulting it in again (xinet_rl/memory.py)
    try:
        code = body()
    except USER_ERRORS + (UsageError,) as exc:
        fail(prog, str(exc))
    except TrainingError as exc:
        fail(prog, str(exc), 3)
    except KeyboardInterrupt:
        fail(prog, "interrupted", 130)
    raise SystemExit(code or 0)


def resolve_device(name: str) -> torch.device:
    """``auto``, ``cpu`` or ``cuda``; asking for CUDA on a machine without it is a user error (exit 2)."""
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was requested but no CUDA device is available")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type`` for integers of at least ``minimum``, with a message that says so."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            kind = "a non-negative integer" if minimum == 0 else f"an integer of at least {minimum}"
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}")
        return value

    return parse


class Parser(argparse.ArgumentParser):
    """argparse with the same one-line error format and exit code 2."""

    def error(self, message: str) -> NoReturn:
        fail(self.prog, message)
