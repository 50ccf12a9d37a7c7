"""The ``--grid`` cross product of a comparison: its values validated by the config's own checks, its points, and
the run directory name of each (variant, grid point, seed)."""

from __future__ import annotations

import itertools
import re
from typing import Any

from xinet_rl.config import TrainConfig, apply_overrides, parse_set
from xinet_rl.report.runs import format_value
from xinet_rl.run.errors import UsageError


def split_values(text: str) -> list[str]:
    """Commas outside brackets separate the values, so list values (``[64,64],[128,128]``) stay whole.

    :param text: ``V1,V2,...``
    :return: the values, stripped
    """
    values, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += (char in "[{") - (char in "]}")
        if char == "," and depth == 0:
            values.append(text[start:i])
            start = i + 1
    return [v.strip() for v in values + [text[start:]]]


def parse_grids(items: list[str], overrides: list[str], total_steps: int | None,
                env_id: str) -> list[tuple[str, list[tuple[str, Any]]]]:
    """``[(key, [(raw value, validated value), ...]), ...]`` from the ``--grid`` arguments. Every value goes through
    the config's own validation; a key that ``--set`` (or ``--total-steps``) also sets, or that xinet-compare sets
    itself, is a user error.

    :param items: the ``KEY=V1,V2,...`` arguments
    :param overrides: the ``--set`` pairs of every run
    :param total_steps: the ``--total-steps`` of every run, if given
    :param env_id: the environment id (whose shipped YAML the values are checked against)
    :return: the keys with their values
    """
    fixed = set(parse_set(overrides)) | ({"total_steps"} if total_steps is not None else set())
    grids: list[tuple[str, list[tuple[str, Any]]]] = []
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        values = split_values(raw) if sep else []
        if not key or not values or not all(values):
            raise UsageError(f"malformed --grid '{item}': expected KEY=V1,V2,...")
        if key in ("variant", "arch_from"):
            raise UsageError(f"--grid {key}: xinet-compare sets {key} itself (choose variants with --variants)")
        if key in fixed:
            where = "--total-steps" if key == "total_steps" and total_steps is not None else "--set"
            raise UsageError(f"--grid {key} conflicts with {where} {key}: give the key in one of them")
        if key in (k for k, _ in grids):
            raise UsageError(f"--grid {key} is given twice: list all its values in one --grid {key}=V1,V2,...")
        checked = []
        for value in values:
            config = apply_overrides(TrainConfig(), parse_set([f"{key}={value}"]), "--grid", env_id)
            coerced = getattr(config, key)
            if any(coerced == c for _, c in checked):
                raise UsageError(f"--grid {key} repeats the value {format_value(coerced)}")
            checked.append((value, coerced))
        grids.append((key, checked))
    return grids


def grid_points(grids: list[tuple[str, list[tuple[str, Any]]]]) -> list[tuple[dict, list[str]]]:
    """The cross product: ``[({key: value}, ["key=raw value", ...]), ...]``; one empty point without ``--grid``.

    :param grids: :func:`parse_grids`
    :return: the points
    """
    keys = [key for key, _ in grids]
    return [({k: coerced for k, (_, coerced) in zip(keys, combo)}, [f"{k}={raw}" for k, (raw, _) in zip(keys, combo)])
            for combo in itertools.product(*(values for _, values in grids))]


def run_name(variant: str, grid: dict, seed: int) -> str:
    """``VARIANT_sSEED``, with ``_KEY-VALUE`` per grid key between (``unpruned_width_scale-0.25_s0``); characters
    other than letters, digits and ``.+-`` in a value become ``_``.

    :param variant: the variant
    :param grid: the grid point
    :param seed: the seed
    :return: the name
    """
    parts = [f"{k}-{re.sub(r'[^A-Za-z0-9.+-]', '_', format_value(v))}" for k, v in grid.items()]
    return "_".join([variant, *parts, f"s{seed}"])
