"""``xinet-compare``: train every (variant, grid point, seed) with Ray, then report aggregate statistics and plots.

Runs live in ``OUT/runs/VARIANT_sSEED``, or ``OUT/runs/VARIANT_KEY-VALUE..._sSEED`` at a point of the ``--grid``
cross product (which each such run also records in ``grid_point.json``). A finished run (``summary.json``) is reused,
an interrupted one is resumed from its newest checkpoint, and ``small`` runs start from the final widths of the
``xinet`` run of the same seed and grid point once it has finished. ``--runs DIR ...`` reports on existing run
directories without training.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xinet_rl.checkpoint import checkpoint_dirs
from xinet_rl.cli.common import Parser, UsageError, int_at_least, run_main
from xinet_rl.config import BUDGET_KEYS, VARIANTS, TrainConfig, apply_overrides, parse_set, resolve_config
from xinet_rl.envs import check_env_id
from xinet_rl.io import write_text_atomic
from xinet_rl.report.aggregate import curves, front_rows, group_runs, improvement, iqm_and_mean, score_matrices
from xinet_rl.report.plots import plot_curves, plot_front, plot_return_vs_params
from xinet_rl.report.runs import GRID_FILE, RunRecord, assign_grid_points, format_value, read_run, series_name

PROG = "xinet-compare"
ALL_VARIANTS = VARIANTS + ("sb3-sac",)


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
    parser.add_argument("--workers", type=int_at_least(1), default=None, help="parallel runs on a local Ray (default: CPU count)")
    parser.add_argument("--address", help="join an existing Ray cluster (host:port) instead of starting one")
    parser.add_argument("--runs", nargs="+", metavar="DIR", help="report on these finished run directories only")
    parser.add_argument("--out", required=True, help="output directory (runs/, report.md, results.json, plots)")
    return parser


def train_run(spec: dict[str, Any]) -> dict:
    """One (variant, grid point, seed) run; executed in a Ray worker with one torch thread."""
    torch.set_num_threads(1)
    from xinet_rl.agents.sb3_reference import train_sb3_sac
    from xinet_rl.cli.train import newest_valid_checkpoint, train

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


def split_values(text: str) -> list[str]:
    """Commas outside brackets separate the values, so list values (``[64,64],[128,128]``) stay whole."""
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
    itself, is a user error."""
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
    """The cross product: ``[({key: value}, ["key=raw value", ...]), ...]``; one empty point without ``--grid``."""
    keys = [key for key, _ in grids]
    return [({k: coerced for k, (_, coerced) in zip(keys, combo)}, [f"{k}={raw}" for k, (raw, _) in zip(keys, combo)])
            for combo in itertools.product(*(values for _, values in grids))]


def run_name(variant: str, grid: dict, seed: int) -> str:
    """``VARIANT_sSEED``, with ``_KEY-VALUE`` per grid key between (``unpruned_width_scale-0.25_s0``); characters
    other than letters, digits and ``.+-`` in a value become ``_``."""
    parts = [f"{k}-{re.sub(r'[^A-Za-z0-9.+-]', '_', format_value(v))}" for k, v in grid.items()]
    return "_".join([variant, *parts, f"s{seed}"])


def plan_runs(env_id: str, variants: list[str], points: list[tuple[dict, list[str]]], seeds: int, out: Path,
              config_file: str | None = None, overrides: list[str] | None = None,
              total_steps: int | None = None) -> list[dict]:
    """One spec per (variant, grid point, seed), ``xinet`` first: a ``small`` spec names in ``after`` the run
    directory of the ``xinet`` run (same seed and grid point) whose final widths it trains, at ``width_scale`` 1
    where the grid has that key (``width_scale`` also multiplies the widths a ``small`` run takes). A budget
    (``target_deploy_params``, ``target_deploy_flops``) is the gated agent's: ``small`` runs train the widths the
    budgeted ``xinet`` run ended at, without it, and ``unpruned`` and ``sac`` runs drop the key from their grid point
    (one run per seed and remaining point, not one per budget)."""
    names = [run_name("v", grid, 0) for grid, _ in points]
    if len(set(names)) != len(names):
        raise UsageError("two --grid points give the same run directory name: use distinct values")
    specs, planned = [], set()
    for variant in sorted(variants, key=lambda v: v != "xinet"):
        for full_grid, full_sets in points:
            grid, sets = full_grid, full_sets
            if variant != "xinet":  # budgets are for the gated agent only
                sets = [s for s in full_sets if s.partition("=")[0] not in BUDGET_KEYS]
                if variant != "small":
                    grid = {k: v for k, v in full_grid.items() if k not in BUDGET_KEYS}
            for seed in range(seeds):
                run_dir = str(out / "runs" / run_name(variant, grid, seed))
                if run_dir in planned:
                    continue
                planned.add(run_dir)
                extra = [o for o in overrides or [] if variant == "xinet" or o.partition("=")[0].strip()
                         not in BUDGET_KEYS] + sets
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


def cluster_token() -> tuple[str | None, str]:
    """The token Ray's client presents to a cluster with token authentication, and where it comes from, in Ray's
    order: ``RAY_AUTH_TOKEN``, the file ``RAY_AUTH_TOKEN_PATH`` names, ``~/.ray/auth_token``."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return os.environ["RAY_AUTH_TOKEN"].strip(), "RAY_AUTH_TOKEN"
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token").expanduser()
    try:
        return path.read_text().strip() or None, str(path)
    except OSError:
        return None, str(path)


def _ask_gcs(address: str, token: str | None) -> tuple[str, str]:
    """One cheap call (``GetClusterId``) to the GCS of a Ray cluster: (gRPC status name, details)."""
    import grpc

    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary("/ray.rpc.NodeInfoGcsService/GetClusterId",
                                   request_serializer=lambda _: b"", response_deserializer=lambda data: data)
        try:
            call(None, timeout=10, metadata=[("authorization", f"Bearer {token}")] if token else None)
            return "OK", ""
        except grpc.RpcError as exc:
            return exc.code().name, " ".join(str(exc.details() or "").split())


TOKEN_HELP = ("print the head's token with `ray get-auth-token` there and copy it to ~/.ray/auth_token here (or set "
              "RAY_AUTH_TOKEN, or RAY_AUTH_TOKEN_PATH to a file that holds it)")


def check_address(address: str) -> bool:
    """Check that ``HOST:PORT`` is the GCS of a Ray cluster this machine can join, before Ray tries (which retries
    for a long time and then ends in a traceback). Returns whether the cluster wants token authentication (this
    machine's token, which was checked, is then presented). A cluster that cannot be joined is a user error."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise UsageError(f"--address {address}: expected HOST:PORT (the GCS address `ray start --head` prints)")
    host = host or "127.0.0.1"
    target = f"{host}:{port}"
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=5):
            pass
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot reach a Ray cluster at {address}: {exc.strerror or exc}") from None
    status, details = _ask_gcs(target, None)
    if status == "OK":
        return False
    if status != "UNAUTHENTICATED":
        raise UsageError(f"cannot join a Ray cluster at {address}: it does not answer as Ray's GCS (give the address "
                         f"`ray start --head` prints; {status}: {details})")
    token, source = cluster_token()
    if token is None:
        raise UsageError(f"cannot join the Ray cluster at {address}: it requires token authentication and this "
                         f"machine has no token (RAY_AUTH_TOKEN is unset and {source} is missing or empty): "
                         f"{TOKEN_HELP}")
    status, details = _ask_gcs(target, token)
    if status == "UNAUTHENTICATED":
        raise UsageError(f"cannot join the Ray cluster at {address}: it rejects the authentication token from "
                         f"{source}: {TOKEN_HELP}")
    if status != "OK":
        raise UsageError(f"cannot join the Ray cluster at {address}: {status}: {details}")
    return True


def join_cluster(address: str) -> None:
    """``ray.init`` on the existing cluster at ``address``, with token authentication where it wants it (Ray's
    client does not turn it on for an explicit address); failures are user errors in one line."""
    if check_address(address):
        os.environ["RAY_AUTH_MODE"] = "token"  # the token itself is found by Ray where cluster_token found it
        if "ray" in sys.modules:  # Ray reads its configuration once; have it read the mode again, as Ray does
            try:
                from ray._raylet import Config

                Config.initialize("")
            except (ImportError, AttributeError):
                pass
    import ray

    try:
        ray.init(address=address, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise UsageError(f"cannot join the Ray cluster at {address}: {reason}") from None


def run_all(args, specs: list[dict]) -> list[tuple[Path, dict]]:
    """Train the specs on Ray (each ``small`` once its ``xinet`` run has finished); ``[(run dir, grid point)]``."""
    planned = {spec["run_dir"] for spec in specs}
    missing = [s for s in specs if s["after"] and s["after"] not in planned
               and not (Path(s["after"]) / "summary.json").is_file()]
    if missing:
        raise UsageError("variant small needs the xinet runs of the same seeds (add xinet to --variants)")
    if args.address:
        join_cluster(args.address)  # sets the authentication mode before it imports Ray
    import ray

    if not args.address:
        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False,
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
        print(f"{PROG}: {series_name(spec['variant'], spec['grid'])} seed {spec['seed']}: return "
              f"{summary['final_eval_return_mean']:.1f}, {summary['params_final']['deploy']} deployable parameters",
              flush=True)
        done.append((Path(spec["run_dir"]), spec["grid"]))
        for follower in waiting.pop(spec["run_dir"], []):
            pending[remote.remote(follower)] = follower
    ray.shutdown()
    return done


def report(runs: list[RunRecord], out: Path) -> dict:
    """``results.json``, ``report.md``, ``curves.png``, ``return_vs_params.png`` and the fronts
    (``front_params.png``, ``front_flops.png``) for these runs, grouped by variant and grid point."""
    from xinet_rl.agents.sb3_reference import sb3_latency_ms
    from xinet_rl.agents.xisac import XiSAC
    from xinet_rl.cli.evaluate import inference_latency_ms

    env_ids = {r.summary["env"] for r in runs}
    if len(env_ids) != 1:
        raise UsageError(f"runs of different environments cannot be compared: {', '.join(sorted(env_ids))}")
    env_id = env_ids.pop()
    for run in runs:
        if run.variant == "sb3-sac":
            run.latency_ms = sb3_latency_ms(run.path)
        elif (run.path / "model.safetensors").is_file():  # without it (a deleted model) the latency is n/a
            model = XiSAC.load(run.path / "model.safetensors", device="cpu")
            obs = np.zeros(model.observation_space.shape, dtype=np.float32)
            run.latency_ms = inference_latency_ms(model, obs, deterministic=True)
    groups = group_runs(runs)
    scores = score_matrices(runs)
    aggregates = iqm_and_mean(scores)
    grids = {json.dumps(r.grid): r.grid for r in runs if r.variant == "xinet"}.values()
    probabilities = improvement(scores, [(series_name("xinet", g), series_name(other, g))
                                         for g in grids for other in ("small", "unpruned")])
    rows: dict[str, dict] = {}
    for name, group in groups.items():

        def mean_of(get):
            values = [get(r) for r in group]
            return None if any(v is None for v in values) else float(np.mean(values))

        rows[name] = {**aggregates[name], "variant": group[0].variant, "grid": group[0].grid,
                      "seeds": [r.seed for r in group], "final_returns": [r.final_return for r in group],
                      "params_train": mean_of(lambda r: r.summary["params_final"]["train"]),
                      "params_deploy": mean_of(lambda r: r.summary["params_final"]["deploy"]),
                      "flops_update": mean_of(lambda r: (r.summary.get("flops_final") or {}).get("update")),
                      "steps_per_second": mean_of(lambda r: r.summary["steps_per_second"]),
                      "latency_ms": mean_of(lambda r: r.latency_ms),
                      "total_steps": mean_of(lambda r: r.summary["total_steps"])}
    front = front_rows(runs, aggregates)
    curve_data = curves(runs)
    results = {"env": env_id, "variants": rows, "front": front, "probability_of_improvement": probabilities,
               "curves": curve_data, "runs": [str(r.path) for r in runs]}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    plot_curves(curve_data, out / "curves.png", env_id)
    plot_return_vs_params(rows, out / "return_vs_params.png", env_id)
    plot_front(front, "params_deploy", out / "front_params.png", env_id, "deployable parameters")
    plot_front(front, "train_flops_total", out / "front_flops.png", env_id, "training FLOPs (train_flops_total)")
    (out / "report.md").write_text(render_markdown(env_id, rows, probabilities, front))
    return results


def _fmt(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _with_percent(text: str, percent: float | None) -> str:
    return text if percent is None else f"{text} ({percent:.1f}%)"


def render_markdown(env_id: str, rows: dict[str, dict], probabilities: dict[str, dict],
                    front: list[dict] | None = None) -> str:
    lines = [f"# Comparison on {env_id}", "",
             "Final evaluation return per run (mean of the last deterministic evaluation); IQM and mean with 95% "
             "stratified-bootstrap intervals (rliable). Parameters, FLOPs, steps/s and latency are means over seeds.",
             "", "| variant | seeds | steps | IQM [95% CI] | mean [95% CI] | params train | params deploy | "
             "GFLOP/update | steps/s | latency ms |", "|---|---|---|---|---|---|---|---|---|---|"]
    for v, r in rows.items():
        flops = None if r["flops_update"] is None else r["flops_update"] / 1e9
        lines.append(f"| {v} | {len(r['seeds'])} | {_fmt(r['total_steps'])} | {r['iqm']:.1f} "
                     f"[{r['iqm_ci'][0]:.1f}, {r['iqm_ci'][1]:.1f}] | {r['mean']:.1f} [{r['mean_ci'][0]:.1f}, "
                     f"{r['mean_ci'][1]:.1f}] | {_fmt(r['params_train'])} | {_fmt(r['params_deploy'])} | "
                     f"{_fmt(flops, 3)} | {_fmt(r['steps_per_second'], 1)} | {_fmt(r['latency_ms'], 3)} |")
    if probabilities:
        lines += ["", "| comparison | probability of improvement [95% CI] |", "|---|---|"]
        lines += [f"| P({k}) | {p['probability']:.2f} [{p['ci'][0]:.2f}, {p['ci'][1]:.2f}] |"
                  for k, p in probabilities.items()]
    if front:
        lines += ["", "## Size and compute", "",
                  "One row per variant and grid point. Percentages are of the unpruned agent at width_scale 1 with the "
                  "same other grid keys, where the comparison has it; train_flops_total is the matmul FLOPs of all "
                  "gradient updates (n/a for runs that do not record it).", "",
                  "| variant | grid point | seeds | return mean [95% CI] | params deploy | params train | "
                  "train_flops_total |", "|---|---|---|---|---|---|---|"]
        for r in front:
            flops = None if r["train_flops_total"] is None else f"{r['train_flops_total']:.3e}"
            lines.append(f"| {r['variant']} | {r['grid_label'] or '-'} | {len(r['seeds'])} | {r['mean']:.1f} "
                         f"[{r['mean_ci'][0]:.1f}, {r['mean_ci'][1]:.1f}] | "
                         f"{_with_percent(_fmt(r['params_deploy']), r['params_deploy_pct'])} | "
                         f"{_fmt(r['params_train'])} | "
                         f"{_with_percent(flops or 'n/a', r['train_flops_total_pct'])} |")
    lines += ["", "![curves](curves.png)", "", "![return against parameters](return_vs_params.png)", ""]
    if front:
        lines += ["![return against deployable parameters](front_params.png)", "",
                  "![return against training FLOPs](front_flops.png)", ""]
    return "\n".join(lines)


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
            for path, grid in run_all(args, specs):
                runs.append(read_run(path))
                runs[-1].grid = grid
        results = report(runs, out)
        for name, row in results["variants"].items():
            print(f"{PROG}: {name}: IQM {row['iqm']:.1f} [{row['iqm_ci'][0]:.1f}, {row['iqm_ci'][1]:.1f}], "
                  f"{_fmt(row['params_deploy'])} deployable parameters")
        print(f"{PROG}: wrote {out / 'report.md'}", file=sys.stderr)
        return 0

    run_main(PROG, body)


if __name__ == "__main__":
    main()
