"""A finished run as data: its variant, seed, grid point, final figures and evaluation curve, read from its
directory."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from xinet_rl.config import GATED_ONLY_KEYS, TrainConfig, current_keys

GRID_FILE = "grid_point.json"  # written by xinet-compare --grid into each run directory: {key: value, ...}


class RunError(ValueError):
    """A run directory that cannot be reported (user-facing: exit code 2)."""


@dataclass
class RunRecord:
    """A finished run as a report reads it (:func:`read_run`): its files' contents and where it stands in a
    comparison.

    :param path: the run directory.
    :param variant: the run's variant (``xinet``, ``unpruned``, ``small``, ``sac``, ``sb3-sac``).
    :param seed: the run's seed.
    :param summary: its ``summary.json``.
    :param steps: the steps of its evaluations.
    :param returns: the mean return of each evaluation.
    :param latency_ms: the deployable policy's batch-1 latency, where measured.
    :param config: its ``config.yaml``, with current key names.
    :param grid_file: its ``grid_point.json``, where xinet-compare wrote one.
    :param grid: its grid point, set by xinet-compare or by :func:`assign_grid_points`.
    """

    path: Path
    variant: str
    seed: int
    summary: dict
    steps: list[int] = field(default_factory=list)
    returns: list[float] = field(default_factory=list)
    latency_ms: float | None = None
    config: dict = field(default_factory=dict)  # the run's config.yaml
    grid_file: dict | None = None  # the run's grid_point.json, where xinet-compare wrote one
    grid: dict = field(default_factory=dict)  # its grid point: set by xinet-compare or by assign_grid_points

    @property
    def final_return(self) -> float:
        return float(self.summary["final_eval_return_mean"])

    @property
    def name(self) -> str:
        """The series the run belongs to: its variant, and its grid point where it has one."""
        return series_name(self.variant, self.grid)


def format_value(value) -> str:
    """A config value as a grid label shows it (``0.25``, ``64x64``, ``true``, ``state_action:30+critic:0``)."""
    if isinstance(value, dict):
        return "+".join(f"{k}:{format_value(v)}" for k, v in value.items()) or "{}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "x".join(format_value(v) for v in value)
    return str(value)


def grid_label(grid: dict) -> str:
    return ", ".join(f"{k}={format_value(v)}" for k, v in grid.items())


def series_name(variant: str, grid: dict) -> str:
    return f"{variant} ({grid_label(grid)})" if grid else variant


def read_run(path: str | Path) -> RunRecord:
    path = Path(path)
    summary_file, config_file, table = path / "summary.json", path / "config.yaml", path / "evaluations.csv"
    for needed in (summary_file, config_file, table):
        if not needed.is_file():
            raise RunError(f"{path} is not a finished run ({needed.name} is missing)")
    try:
        summary = json.loads(summary_file.read_text())
        config = current_keys(yaml.safe_load(config_file.read_text()) or {})
        with table.open(newline="") as handle:
            rows = [r for r in csv.DictReader(handle) if r.get("event", "eval") == "eval"]
        curve = {int(r["step"]): float(r["return_mean"]) for r in rows}  # a final cut's evaluation replaces the
        steps, returns = list(curve), list(curve.values())                # uncut policy's at the same step
        grid_file = json.loads((path / GRID_FILE).read_text()) if (path / GRID_FILE).is_file() else None
        if grid_file is not None and not isinstance(grid_file, dict):
            raise ValueError(f"{GRID_FILE} is not a mapping")
    except (OSError, ValueError, KeyError, yaml.YAMLError) as exc:
        raise RunError(f"{path}: unreadable run files ({type(exc).__name__}: {exc})") from None
    return RunRecord(path, str(config.get("variant", "xinet")), int(summary["seed"]), summary, steps, returns,
                     config=config, grid_file=grid_file)


NOT_GRID_KEYS = {"env", "seed", "variant", "arch_from"}  # differ between runs of a comparison by construction


def assign_grid_points(runs: list[RunRecord]) -> None:
    """Each run's grid point, for runs that ``--runs`` names: the ``grid_point.json`` xinet-compare wrote where every
    run of the variant has one, else the config keys whose values differ between the runs of the variant (a key
    missing from an older run's ``config.yaml`` counts as its current default; for a variant without gates, the keys
    of :data:`~xinet_rl.config.GATED_ONLY_KEYS` do not count)."""
    defaults = vars(TrainConfig())
    by_variant: dict[str, list[RunRecord]] = {}
    for run in runs:
        by_variant.setdefault(run.variant, []).append(run)
    for group in by_variant.values():
        if all(r.grid_file is not None for r in group):
            for run in group:
                run.grid = dict(run.grid_file)
            continue
        def value(run: RunRecord, key: str):
            return run.config.get(key, defaults.get(key))

        # runs without gates that differ only in the gates' keys (the defaults' changes over time) trained alike
        inert = GATED_ONLY_KEYS if not any(value(r, "gated") for r in group) else frozenset()
        keys = sorted({k for r in group for k in r.config} - NOT_GRID_KEYS - inert)

        varying = [k for k in keys if len({json.dumps(value(r, k), sort_keys=True) for r in group}) > 1]
        for run in group:
            run.grid = {k: value(run, k) for k in varying}
