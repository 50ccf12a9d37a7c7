"""Aggregate statistics across seeds with rliable: IQM and mean with 95% stratified-bootstrap intervals, and the
probability of improvement of one variant over another. Runs are grouped by series: a variant, or a variant at one
grid point of ``xinet-compare --grid``."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
from rliable import library as rly
from rliable import metrics

from xinet_rl.report.runs import RunRecord, grid_label

REPS = 2000


def _state(seed: int) -> np.random.RandomState:
    return np.random.RandomState(seed)


ORDER = ["xinet", "small", "unpruned", "sac", "sb3-sac"]


def _sortable(value) -> tuple:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, json.dumps(value, sort_keys=True))


def series_key(run: RunRecord) -> tuple:
    """Variants in a fixed order, then each variant's grid points by their values (numbers numerically)."""
    return (ORDER.index(run.variant) if run.variant in ORDER else len(ORDER), run.variant,
            tuple((k, _sortable(v)) for k, v in run.grid.items()))


def group_runs(runs: list[RunRecord]) -> dict[str, list[RunRecord]]:
    """``{series name: its runs sorted by seed}`` in series order."""
    grouped: dict[str, list[RunRecord]] = defaultdict(list)
    for run in sorted(runs, key=lambda r: (series_key(r), r.seed)):
        grouped[run.name].append(run)
    return dict(grouped)


def score_matrices(runs: list[RunRecord]) -> dict[str, np.ndarray]:
    """Final evaluation return per run: ``{series: array [runs, 1 task]}`` (sorted by seed)."""
    return {name: np.array([[r.final_return] for r in group]) for name, group in group_runs(runs).items()}


def iqm_and_mean(scores: dict[str, np.ndarray], reps: int = REPS, seed: int = 0) -> dict[str, dict]:
    def aggregate(x: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_iqm(x), metrics.aggregate_mean(x)])

    points, intervals = rly.get_interval_estimates(scores, aggregate, reps=reps, random_state=_state(seed))
    return {v: {"iqm": float(points[v][0]), "iqm_ci": [float(intervals[v][0, 0]), float(intervals[v][1, 0])],
                "mean": float(points[v][1]), "mean_ci": [float(intervals[v][0, 1]), float(intervals[v][1, 1])]}
            for v in scores}


def improvement(scores: dict[str, np.ndarray], pairs: list[tuple[str, str]], reps: int = REPS,
                seed: int = 0) -> dict[str, dict]:
    """``P(X > Y)`` for each pair present, with its 95% interval."""
    present = {f"{x} > {y}": (scores[x], scores[y]) for x, y in pairs if x in scores and y in scores}
    if not present:
        return {}
    points, intervals = rly.get_interval_estimates(present, metrics.probability_of_improvement, reps=reps,
                                                   random_state=_state(seed))
    return {k: {"probability": float(points[k]), "ci": [float(intervals[k][0][0]), float(intervals[k][1][0])]}
            for k in present}


def curves(runs: list[RunRecord], reps: int = 500, seed: int = 0) -> dict[str, dict]:
    """Mean evaluation return against steps per series, with 95% bootstrap bands over seeds (steps that every seed
    of the series evaluated)."""
    out = {}
    for variant, group in group_runs(runs).items():
        common = sorted(set.intersection(*(set(r.steps) for r in group)))
        means, lows, highs = [], [], []
        for step in common:
            values = np.array([[r.returns[r.steps.index(step)]] for r in group])
            point, interval = rly.get_interval_estimates({"x": values}, metrics.aggregate_mean, reps=reps,
                                                         random_state=_state(seed))
            means.append(float(np.ravel(point["x"])[0]))
            lows.append(float(np.ravel(interval["x"][0])[0]))
            highs.append(float(np.ravel(interval["x"][1])[0]))
        out[variant] = {"steps": common, "mean": means, "low": lows, "high": highs}
    return out


def _mean(values: list) -> float | None:
    """Mean over seeds; ``None`` where any run lacks the figure (older runs, other run kinds)."""
    return None if not values or any(v is None for v in values) else float(np.mean(values))


def _width_scale(group: list[RunRecord]) -> float | None:
    scales = {float(r.config.get("width_scale", 1.0)) for r in group}
    return scales.pop() if len(scales) == 1 else None


def _percent(value: float | None, reference: float | None) -> float | None:
    return None if value is None or not reference else 100.0 * value / reference


def front_rows(runs: list[RunRecord], aggregates: dict[str, dict]) -> list[dict]:
    """One row per series (variant and grid point): final return mean and 95% interval (from ``aggregates``, as
    :func:`iqm_and_mean` gives them), mean deployable and training parameters and mean ``train_flops_total`` over
    seeds, and the last two as percentages of the unpruned agent at ``width_scale`` 1 with the same other grid keys
    (or of the only such agent), where the comparison has one."""
    rows = []
    for name, group in group_runs(runs).items():
        first = group[0]
        rows.append({"series": name, "variant": first.variant, "grid": dict(first.grid),
                     "grid_label": grid_label(first.grid), "width_scale": _width_scale(group),
                     "seeds": [r.seed for r in group], "final_returns": [r.final_return for r in group],
                     "mean": aggregates[name]["mean"], "mean_ci": aggregates[name]["mean_ci"],
                     "params_deploy": _mean([r.summary["params_final"]["deploy"] for r in group]),
                     "params_train": _mean([r.summary["params_final"]["train"] for r in group]),
                     "train_flops_total": _mean([r.summary.get("train_flops_total") for r in group])})

    def rest(grid: dict) -> str:
        return json.dumps({k: v for k, v in grid.items() if k != "width_scale"}, sort_keys=True)

    references = [r for r in rows if r["variant"] == "unpruned" and r["width_scale"] == 1.0]
    for row in rows:
        matches = [r for r in references if rest(r["grid"]) == rest(row["grid"])]
        reference = matches[0] if matches else references[0] if len(references) == 1 else None
        row["reference"] = None if reference is None else reference["series"]
        for key in ("params_deploy", "train_flops_total"):
            row[f"{key}_pct"] = _percent(row[key], None if reference is None else reference[key])
    return rows
