"""Where a run's files are, and what a run says about itself: the default run directory, the model file of a run
directory or path, the environment a model was trained on and the widths it ended at.

Training, evaluation, export and ``--variant small --arch-from`` all accept "a run directory or a model file"; this
module is the one place that decides what that means.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from xinet_rl.config import read_yaml
from xinet_rl.io import ModelFileError, read_model_file
from xinet_rl.run.errors import UsageError
from xinet_rl.structure import Widths

if TYPE_CHECKING:
    from xinet_rl.agents.xisac import XiSAC


def default_run_dir(env_id: str, seed: int) -> Path:
    """``runs/ENV_sSEED_TIME``, the run directory of a run started without ``--out``.

    :param env_id: the environment id
    :param seed: the run's seed
    :return: the directory (not created)
    """
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{env_id}_s{seed}_{stamp}"


def resolve_model_path(path: Path) -> Path:
    """The model file of a run directory (its ``model.safetensors``), or ``path`` itself where it is a file.

    :param path: a run directory or a model file
    :return: the model file
    """
    if path.is_dir():
        model = path / "model.safetensors"
        if not model.is_file():
            raise UsageError(f"run directory {path} has no model.safetensors (unfinished run? resume it first)")
        return model
    if not path.exists():
        raise UsageError(f"no such run directory or model file: {path}")
    return path


def resolve_env_id(path: Path, model: XiSAC, given: str | None) -> str:
    """The environment to run a saved model on: the one asked for, else the one the model records, else the one
    of the run's ``config.yaml``.

    :param path: the run directory or model file the model was loaded from
    :param model: the loaded model
    :param given: the environment asked for (``--env``), if any
    :return: the environment id
    """
    if given:
        return given
    if model.env_id:
        return model.env_id
    config = path / "config.yaml" if path.is_dir() else path.parent / "config.yaml"
    if config.is_file() and "env" in read_yaml(config):
        return str(read_yaml(config)["env"])
    raise UsageError("the model does not record its environment: pass --env")


def arch_networks(source: str) -> dict[str, list[int]]:
    """The widths a run ended at, per network (``summary.json``'s ``widths_final``): from its model file, else from
    its ``summary.json`` (committed results keep the summary and leave the model out).

    :param source: a run directory or a model file (``arch_from``)
    :return: hidden widths per network name (``ofenet_state``, ``ofenet_state_action``, ``actor``, ``critic1``,
        ``critic2``)
    """
    path = Path(source)
    if path.is_dir() and not (path / "model.safetensors").is_file():
        summary = path / "summary.json"
        if not summary.is_file():
            raise UsageError(f"run directory {path} has neither model.safetensors nor summary.json (unfinished run? "
                             f"resume it first)")
        try:
            networks = json.loads(summary.read_text())["widths_final"]
            return Widths.check_networks(networks)
        except (KeyError, TypeError, ValueError):
            raise UsageError(f"{summary}: no widths_final to train from (not a finished run's summary)") from None
    if path.is_dir():
        path = path / "model.safetensors"
    _, meta = read_model_file(path)
    try:
        return Widths.from_dict(meta["widths"]).networks()
    except (KeyError, TypeError, ValueError):
        raise ModelFileError(f"{path}: the model file does not record its widths") from None
