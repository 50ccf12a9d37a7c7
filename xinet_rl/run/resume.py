"""What a run directory needs to be continued: the environment, seed and configuration it was started with, its new
total, and the newest of its checkpoints that passes validation.

Used by ``xinet-train --resume`` and by the comparison's workers, which resume interrupted runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from xinet_rl.checkpoint import CheckpointError, checkpoint_dirs, read_checkpoint
from xinet_rl.config import ConfigError, TrainConfig, apply_overrides, read_yaml
from xinet_rl.io import write_text_atomic
from xinet_rl.run.errors import UsageError


def newest_valid_checkpoint(run_dir: Path, prog: str = "xinet-train") -> Path:
    """The newest checkpoint that passes validation; each one that fails is reported on stderr.

    :param run_dir: the run directory
    :param prog: the name the warnings start with
    :return: the checkpoint directory
    """
    candidates = checkpoint_dirs(run_dir)
    if not candidates:
        raise UsageError(f"{run_dir} has no checkpoints to resume from")
    for path in candidates:
        try:
            read_checkpoint(path)
            return path
        except CheckpointError as exc:
            print(f"{prog}: warning: skipping invalid checkpoint: {exc}", file=sys.stderr)
    raise CheckpointError(f"{run_dir}: no valid checkpoint")


def load_run_config(run_dir: Path, total_steps: int | None) -> tuple[str, int, TrainConfig]:
    """The environment, seed and configuration a run directory was started with.

    :param run_dir: the run directory (its ``config.yaml``)
    :param total_steps: a new total, if any (else the recorded one)
    :return: ``(env id, seed, config)``
    """
    data = read_yaml(run_dir / "config.yaml")
    try:
        env_id, seed = str(data.pop("env")), int(data.pop("seed"))
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"{run_dir / 'config.yaml'} does not name the run's env and seed") from None
    config = apply_overrides(TrainConfig(), data, str(run_dir / "config.yaml"), env_id)
    if total_steps is not None:
        config.total_steps = total_steps
    return env_id, seed, config


def record_total_steps(path: Path, total_steps: int) -> None:
    """Write a resumed run's (new) total into its ``config.yaml``, the rest of the file unchanged.

    :param path: the run's ``config.yaml``
    :param total_steps: the total to record
    """
    data = read_yaml(path)
    if data.get("total_steps") != total_steps:
        data["total_steps"] = total_steps
        write_text_atomic(path, yaml.safe_dump(data, sort_keys=False))
