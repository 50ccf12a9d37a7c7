"""Aggregate statistics across seeds with rliable: IQM and mean with 95% stratified-bootstrap intervals, and the
probability of improvement of one variant over another."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from rliable import library as rly
from rliable import metrics

from xinet_rl.report.runs import RunRecord

REPS = 2000


def _state(seed: int) -> np.random.RandomState:
    return np.random.RandomState(seed)


def score_matrices(runs: list[RunRecord]) -> dict[str, np.ndarray]:
    """Final evaluation return per run: ``{variant: array [runs, 1 task]}`` (sorted by seed)."""
    grouped: dict[str, list[RunRecord]] = defaultdict(list)
    for run in runs:
        grouped[run.variant].append(run)
    order = ["xinet", "small", "unpruned", "sac", "sb3-sac"]
    names = sorted(grouped, key=lambda v: (order.index(v) if v in order else len(order), v))
    return {v: np.array([[r.final_return] for r in sorted(grouped[v], key=lambda r: r.seed)]) for v in names}


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
    """Mean evaluation return against steps per variant, with 95% bootstrap bands over seeds (steps that every seed
    of the variant evaluated)."""
    grouped: dict[str, list[RunRecord]] = defaultdict(list)
    for run in runs:
        grouped[run.variant].append(run)
    out = {}
    for variant, group in grouped.items():
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
