"""What every command shares: user errors become one line on stderr and exit code 2.

:class:`~xinet_rl.run.errors.UsageError` and :func:`~xinet_rl.run.device.resolve_device` live in the run layer, which
raises and uses them without importing the command lines; they are imported here for the commands."""

from __future__ import annotations

import argparse
import re
import sys
import warnings
from importlib import metadata
from typing import Any, Callable, NoReturn

from xinet_rl.config import ConfigError
from xinet_rl.envs.make import EnvError
from xinet_rl.guards import TrainingError
from xinet_rl.io import ModelFileError
from xinet_rl.memory import keep_freed_memory
from xinet_rl.report.runs import RunError
from xinet_rl.run.device import resolve_device
from xinet_rl.run.errors import UsageError

__all__ = ["USER_ERRORS", "HelpFormatter", "Parser", "UsageError", "fail", "filter_known_noise", "int_at_least",
           "package_version", "plain", "resolve_device", "run_main"]

USER_ERRORS = (ConfigError, EnvError, ModelFileError, RunError)


def fail(prog: str, message: str, code: int = 2) -> NoReturn:
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(code)


# Known, harmless warnings of third-party libraries, filtered by message and module (each command's own process):
# rliable hands ``random_state`` to arch's bootstrap, which arch deprecates in favour of ``seed``.
KNOWN_NOISE = ((r"random_state is deprecated", FutureWarning, r"arch\.bootstrap"),)


def filter_known_noise() -> None:
    for message, category, module in KNOWN_NOISE:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)


def package_version() -> str:
    try:
        return metadata.version("xinet-rl")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        from xinet_rl.version import __version__

        return __version__


def run_main(prog: str, body: Callable[[], int | None]) -> None:
    filter_known_noise()
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


def plain(text: str) -> str:
    """A docstring's reST markup (````literal````, ``:role:`target```) as plain text, for ``--help``."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", text)
    return re.sub(r"``([^`]+)``", r"\1", text)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default after its help, where it has one worth showing (not ``None``, an empty list or
    the ``False`` of a flag; those options say in their help what happens without them)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help_text = action.help or ""
        default = action.default
        nothing = default is None or default is False or default == argparse.SUPPRESS or default == []
        if nothing or "%(default)" in help_text or "(default:" in help_text:
            return help_text
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """argparse with the same one-line error format and exit code 2, ``--version``, and every option's default in
    ``--help``.

    :param args: ``argparse.ArgumentParser``'s arguments.
    :param kwargs: its keyword arguments (``formatter_class`` defaults to one that shows the defaults).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self.add_argument("--version", action="version", version=f"%(prog)s {package_version()}",
                          help="show the version and exit")

    def error(self, message: str) -> NoReturn:
        fail(self.prog, message)
