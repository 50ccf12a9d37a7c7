"""A finished run as data: its variant, seed, final figures and evaluation curve, read from its directory."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml


class RunError(ValueError):
    """A run directory that cannot be reported (user-facing: exit code 2)."""


@dataclass
class RunRecord:
    path: Path
    variant: str
    seed: int
    summary: dict
    steps: list[int] = field(default_factory=list)
    returns: list[float] = field(default_factory=list)
    latency_ms: float | None = None

    @property
    def final_return(self) -> float:
        return float(self.summary["final_eval_return_mean"])


def read_run(path: str | Path) -> RunRecord:
    path = Path(path)
    summary_file, config_file, table = path / "summary.json", path / "config.yaml", path / "evaluations.csv"
    for needed in (summary_file, config_file, table):
        if not needed.is_file():
            raise RunError(f"{path} is not a finished run ({needed.name} is missing)")
    try:
        summary = json.loads(summary_file.read_text())
        config = yaml.safe_load(config_file.read_text()) or {}
        with table.open(newline="") as handle:
            rows = [r for r in csv.DictReader(handle) if r.get("event", "eval") == "eval"]
        steps = [int(r["step"]) for r in rows]
        returns = [float(r["return_mean"]) for r in rows]
    except (OSError, ValueError, KeyError, yaml.YAMLError) as exc:
        raise RunError(f"{path}: unreadable run files ({type(exc).__name__}: {exc})") from None
    return RunRecord(path, str(config.get("variant", "xinet")), int(summary["seed"]), summary, steps, returns)
