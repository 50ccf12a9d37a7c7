"""``xinet-compare``: train every (variant, grid point, seed) with Ray, then report aggregate statistics and plots.

Runs live in ``OUT/runs/VARIANT_sSEED``, or ``OUT/runs/VARIANT_KEY-VALUE..._sSEED`` at a point of the ``--grid``
cross product (which each such run also records in ``grid_point.json``). A finished run (``summary.json``) is reused,
an interrupted one is resumed from its newest checkpoint, and ``small`` runs start from the final widths of the
``xinet`` run of the same seed and grid point once it has finished. ``--runs DIR ...`` reports on existing run
directories without training.

This module parses the command line and prints; the work is :mod:`xinet_rl.run.compare`'s (planning, training on
Ray), :mod:`xinet_rl.run.grid`'s and :mod:`xinet_rl.run.compare_report`'s.
"""

from __future__ import annotations

import sys
from pathlib import Path

from xinet_rl.cli.common import Parser, UsageError, int_at_least, run_main
from xinet_rl.config import resolve_config
from xinet_rl.envs import check_env_id
from xinet_rl.report.runs import assign_grid_points, read_run, series_name
from xinet_rl.run.compare import ALL_VARIANTS, plan_runs, run_all
from xinet_rl.run.compare_report import format_number, write_comparison
from xinet_rl.run.grid import grid_points, parse_grids

PROG = "xinet-compare"


def build_parser() -> Parser:
    parser = Parser(prog=PROG, description="Compare the pruned agent with its baselines across seeds.")
    parser.add_argument("--env", help="gymnasium id (HalfCheetah-v4, Hopper-v4, ...)")
    parser.add_argument("--variants", default="xinet,small,unpruned,sac",
                        help=f"comma-separated, from {', '.join(ALL_VARIANTS)}")
    parser.add_argument("--seeds", type=int_at_least(1), default=3, help="seeds 0..K-1")
    parser.add_argument("--total-steps", type=int_at_least(0), help="environment steps per run")
    parser.add_argument("--config", help="YAML file of config keys for every run")
    parser.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override config keys of every run: several pairs after one --set, or --set repeated")
    parser.add_argument("--grid", dest="grids", action="append", default=[], metavar="KEY=V1,V2,...",
                        help="train every variant at every point of the cross product of all --grid keys")
    parser.add_argument("--workers", type=int_at_least(1), default=None,
                        help="parallel runs on a local Ray (default: CPU count)")
    parser.add_argument("--address", help="join an existing Ray cluster (host:port) instead of starting one")
    parser.add_argument("--runs", nargs="+", metavar="DIR", help="report on these finished run directories only")
    parser.add_argument("--out", required=True, help="output directory (runs/, report.md, results.json, plots)")
    return parser


def print_finished(spec: dict, summary: dict) -> None:
    """One line per finished run, as it finishes."""
    print(f"{PROG}: {series_name(spec['variant'], spec['grid'])} seed {spec['seed']}: return "
          f"{summary['final_eval_return_mean']:.1f}, {summary['params_final']['deploy']} deployable parameters",
          flush=True)


def main(argv: list[str] | None = None) -> None:
    def body() -> int:
        args = build_parser().parse_args(argv)
        out = Path(args.out).resolve()  # Ray workers do not share this process's working directory
        if args.runs:
            if args.grids:
                raise UsageError("--grid trains runs; with --runs the grid points come from the run directories")
            runs = [read_run(p) for p in args.runs]
            assign_grid_points(runs)
        else:
            if not args.env:
                raise UsageError("--env is required (or give --runs DIR ...)")
            check_env_id(args.env)
            variants = [v.strip() for v in args.variants.split(",") if v.strip()]
            unknown = [v for v in variants if v not in ALL_VARIANTS]
            if unknown or not variants:
                raise UsageError(f"unknown variant(s) {', '.join(unknown) or '(none)'}: choose from "
                                 f"{', '.join(ALL_VARIANTS)}")
            points = grid_points(parse_grids(args.grids, args.overrides, args.total_steps, args.env))
            for _, sets in points:  # bad keys and combinations fail here, before anything is written
                resolve_config(args.env, args.config, args.overrides + sets, args.total_steps)
            specs = plan_runs(args.env, variants, points, args.seeds, out, args.config, args.overrides,
                              args.total_steps)
            runs = []
            for path, grid in run_all(specs, args.workers, args.address, on_done=print_finished):
                runs.append(read_run(path))
                runs[-1].grid = grid
        results = write_comparison(runs, out)
        for name, row in results["variants"].items():
            print(f"{PROG}: {name}: IQM {row['iqm']:.1f} [{row['iqm_ci'][0]:.1f}, {row['iqm_ci'][1]:.1f}], "
                  f"{format_number(row['params_deploy'])} deployable parameters")
        print(f"{PROG}: wrote {out / 'report.md'}", file=sys.stderr)
        return 0

    run_main(PROG, body)


if __name__ == "__main__":
    main()
