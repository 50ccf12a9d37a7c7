"""A comparison's runs: one per (variant, grid point, seed), planned, then trained on Ray, each ``small`` run once
the ``xinet`` run whose final widths it trains has finished.

Runs live in ``OUT/runs/VARIANT_sSEED``, or ``OUT/runs/VARIANT_KEY-VALUE..._sSEED`` at a grid point (which each such
run also records in ``grid_point.json``). A finished run (``summary.json``) is reused and an interrupted one is
resumed from its newest checkpoint.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import torch

from xinet_rl.checkpoint import checkpoint_dirs
from xinet_rl.config import SIZE_KEYS, VARIANT_KEYS, VARIANTS, resolve_config
from xinet_rl.io import write_text_atomic
from xinet_rl.report.runs import GRID_FILE
from xinet_rl.run.cluster import join_cluster
from xinet_rl.run.errors import UsageError
from xinet_rl.run.grid import run_name

ALL_VARIANTS = VARIANTS + ("sb3-sac",)


def train_run(spec: dict[str, Any]) -> dict:
    """One (variant, grid point, seed) run; executed in a Ray worker with one torch thread.

    :param spec: one of :func:`plan_runs`
    :return: the run's summary
    """
    torch.set_num_threads(1)
    from xinet_rl.run.baseline import train_sb3_sac
    from xinet_rl.run.resume import newest_valid_checkpoint
    from xinet_rl.run.trainer import train

    run_dir = Path(spec["run_dir"])
    if (run_dir / "summary.json").is_file():
        summary = json.loads((run_dir / "summary.json").read_text())
    else:
        config = resolve_config(spec["env"], spec["config"], spec["overrides"], spec["total_steps"])
        if spec["variant"] == "sb3-sac":
            shutil.rmtree(run_dir, ignore_errors=True)  # SB3 runs are not resumable: start again
            summary = train_sb3_sac(spec["env"], config, spec["seed"], run_dir)
        else:
            resume = newest_valid_checkpoint(run_dir) if checkpoint_dirs(run_dir) else None
            if resume is None:
                shutil.rmtree(run_dir, ignore_errors=True)
            summary = train(spec["env"], config, spec["seed"], run_dir, torch.device("cpu"), progress=False,
                            resume_from=resume)
    if spec["grid"]:  # lets --runs tell the grid point without reading it from the directory name
        write_text_atomic(run_dir / GRID_FILE, json.dumps(spec["grid"]) + "\n")
    return summary


def plan_runs(env_id: str, variants: list[str], points: list[tuple[dict, list[str]]], seeds: int, out: Path,
              config_file: str | None = None, overrides: list[str] | None = None,
              total_steps: int | None = None) -> list[dict]:
    """One spec per (variant, grid point, seed), ``xinet`` first: a ``small`` spec names in ``after`` the run
    directory of the ``xinet`` run (same seed and grid point) whose final widths it trains, at ``width_scale`` 1
    where the grid has that key (``width_scale`` also multiplies the widths a ``small`` run takes). A budget
    (``target_deploy_params``, ``target_deploy_flops``) is the gated agent's: ``small`` runs train the widths the
    budgeted ``xinet`` run ended at, without it, and ``unpruned`` and ``sac`` runs drop the key from their grid point
    (one run per seed and remaining point, not one per budget).

    :param env_id: the environment id
    :param variants: from :data:`ALL_VARIANTS`
    :param points: :func:`xinet_rl.run.grid.grid_points`
    :param seeds: seeds ``0..seeds-1``
    :param out: the comparison's output directory (runs go in ``out/runs``)
    :param config_file: YAML file of config keys for every run
    :param overrides: ``KEY=VALUE`` pairs for every run
    :param total_steps: environment steps per run
    :return: the specs (``env``, ``config``, ``overrides``, ``total_steps``, ``variant``, ``seed``, ``grid``,
        ``after``, ``run_dir``)
    """
    names = [run_name("v", grid, 0) for grid, _ in points]
    if len(set(names)) != len(names):
        raise UsageError("two --grid points give the same run directory name: use distinct values")
    specs, planned = [], set()
    for variant in sorted(variants, key=lambda v: v != "xinet"):
        for full_grid, full_sets in points:
            grid, sets = full_grid, full_sets
            # keys the variant's composition sets (budgets and the final cut are for the gated agent only) apply to the
            # other variants
            composed = set(VARIANT_KEYS.get(variant, {})) | (set(SIZE_KEYS) if variant != "xinet" else set())
            if composed:
                sets = [s for s in full_sets if s.partition("=")[0] not in composed]
                # a small run keeps the grid point of the xinet run it takes its widths from
                grid = {k: v for k, v in full_grid.items() if k not in composed or variant == "small"}
            for seed in range(seeds):
                run_dir = str(out / "runs" / run_name(variant, grid, seed))
                if run_dir in planned:
                    continue
                planned.add(run_dir)
                extra = [o for o in overrides or [] if o.partition("=")[0].strip() not in composed] + sets
                if variant in VARIANTS:
                    extra.append(f"variant={variant}")
                after = None
                if variant == "small":
                    after = str(out / "runs" / run_name("xinet", full_grid, seed))
                    extra.append(f"arch_from={after}")
                    if "width_scale" in grid:  # the xinet run's widths are scaled already: train them as they are
                        extra = [o for o in extra if not o.startswith("width_scale=")] + ["width_scale=1"]
                specs.append({"env": env_id, "config": config_file, "overrides": extra, "total_steps": total_steps,
                              "variant": variant, "seed": seed, "grid": grid, "after": after,
                              "run_dir": run_dir})
    return specs


def run_all(specs: list[dict], workers: int | None = None, address: str | None = None,
            on_done: Callable[[dict, dict], None] | None = None) -> list[tuple[Path, dict]]:
    """Train the specs on Ray (each ``small`` once its ``xinet`` run has finished); ``[(run dir, grid point)]``.

    :param specs: :func:`plan_runs`
    :param workers: parallel runs on a local Ray (``None``: the CPU count)
    :param address: join the existing Ray cluster at ``HOST:PORT`` instead of starting one
    :param on_done: called with each spec and its summary as it finishes
    :return: the finished runs, in the order they finished
    """
    planned = {spec["run_dir"] for spec in specs}
    missing = [s for s in specs if s["after"] and s["after"] not in planned
               and not (Path(s["after"]) / "summary.json").is_file()]
    if missing:
        raise UsageError("variant small needs the xinet runs of the same seeds (add xinet to --variants)")
    if address:
        join_cluster(address)  # sets the authentication mode before it imports Ray
    import ray

    if not address:
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    remote = ray.remote(num_cpus=1)(train_run)
    waiting: dict[str, list[dict]] = {}  # xinet run directory -> the small specs that wait for it
    pending: dict[Any, dict] = {}
    for spec in specs:
        if spec["after"] in planned:
            waiting.setdefault(spec["after"], []).append(spec)
        else:
            pending[remote.remote(spec)] = spec
    done: list[tuple[Path, dict]] = []
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        spec = pending.pop(ready[0])
        summary = ray.get(ready[0])
        if on_done is not None:
            on_done(spec, summary)
        done.append((Path(spec["run_dir"]), spec["grid"]))
        for follower in waiting.pop(spec["run_dir"], []):
            pending[remote.remote(follower)] = follower
    ray.shutdown()
    return done
