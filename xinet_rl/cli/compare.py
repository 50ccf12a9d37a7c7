"""``xinet-compare``: train every (variant, seed) with Ray, then report aggregate statistics and plots.

Runs live in ``OUT/runs/VARIANT_sSEED``. A finished run (``summary.json``) is reused, an interrupted one is resumed
from its newest checkpoint, and ``small`` runs start from the final widths of the same seed's ``xinet`` run once it
has finished. ``--runs DIR ...`` reports on existing run directories without training.
"""

from __future__ import annotations

import json
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xinet_rl.checkpoint import checkpoint_dirs
from xinet_rl.cli.common import Parser, UsageError, int_at_least, run_main
from xinet_rl.config import VARIANTS, resolve_config
from xinet_rl.envs import check_env_id
from xinet_rl.report.aggregate import curves, improvement, iqm_and_mean, score_matrices
from xinet_rl.report.plots import plot_curves, plot_return_vs_params
from xinet_rl.report.runs import RunRecord, read_run

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
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--workers", type=int_at_least(1), default=None, help="parallel runs on a local Ray (default: CPU count)")
    parser.add_argument("--address", help="join an existing Ray cluster (host:port) instead of starting one")
    parser.add_argument("--runs", nargs="+", metavar="DIR", help="report on these finished run directories only")
    parser.add_argument("--out", required=True, help="output directory (runs/, report.md, results.json, plots)")
    return parser


def train_run(spec: dict[str, Any]) -> dict:
    """One (variant, seed) run; executed in a Ray worker with one torch thread."""
    torch.set_num_threads(1)
    from xinet_rl.agents.sb3_reference import train_sb3_sac
    from xinet_rl.cli.train import newest_valid_checkpoint, train

    run_dir = Path(spec["run_dir"])
    if (run_dir / "summary.json").is_file():
        return json.loads((run_dir / "summary.json").read_text())
    config = resolve_config(spec["env"], spec["config"], spec["overrides"], spec["total_steps"])
    if spec["variant"] == "sb3-sac":
        shutil.rmtree(run_dir, ignore_errors=True)  # SB3 runs are not resumable: start again
        return train_sb3_sac(spec["env"], config, spec["seed"], run_dir)
    resume = newest_valid_checkpoint(run_dir) if checkpoint_dirs(run_dir) else None
    if resume is None:
        shutil.rmtree(run_dir, ignore_errors=True)
    return train(spec["env"], config, spec["seed"], run_dir, torch.device("cpu"), progress=False, resume_from=resume)


def check_address(address: str) -> None:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=5):
            return
    except (OSError, ValueError):
        raise UsageError(f"cannot reach a Ray cluster at {address}") from None


def run_all(args, variants: list[str], out: Path) -> list[Path]:
    import ray

    if args.address:
        check_address(args.address)
        ray.init(address=args.address, log_to_driver=False)
    else:
        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    remote = ray.remote(num_cpus=1)(train_run)
    base = {"env": args.env, "config": args.config, "overrides": args.overrides, "total_steps": args.total_steps}

    def spec(variant: str, seed: int) -> dict:
        overrides = list(args.overrides)
        if variant in VARIANTS:
            overrides.append(f"variant={variant}")
        if variant == "small":
            overrides.append(f"arch_from={out / 'runs' / f'xinet_s{seed}'}")
        return {**base, "overrides": overrides, "variant": variant, "seed": seed,
                "run_dir": str(out / "runs" / f"{variant}_s{seed}")}

    pending: dict[Any, tuple[str, int]] = {}
    first = sorted((v for v in variants if v != "small"), key=lambda v: v != "xinet")  # small waits for xinet
    for variant in first:
        for seed in range(args.seeds):
            pending[remote.remote(spec(variant, seed))] = (variant, seed)
    waiting_small = set(range(args.seeds)) if "small" in variants else set()
    if waiting_small and "xinet" not in variants:
        for seed in list(waiting_small):
            if (out / "runs" / f"xinet_s{seed}" / "summary.json").is_file():
                pending[remote.remote(spec("small", seed))] = ("small", seed)
                waiting_small.discard(seed)
        if waiting_small:
            raise UsageError("variant small needs the xinet runs of the same seeds (add xinet to --variants)")
    done: list[Path] = []
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        variant, seed = pending.pop(ready[0])
        summary = ray.get(ready[0])
        print(f"{PROG}: {variant} seed {seed}: return {summary['final_eval_return_mean']:.1f}, "
              f"{summary['params_final']['deploy']} deployable parameters", flush=True)
        done.append(out / "runs" / f"{variant}_s{seed}")
        if variant == "xinet" and seed in waiting_small:
            waiting_small.discard(seed)
            pending[remote.remote(spec("small", seed))] = ("small", seed)
    ray.shutdown()
    return done


def report(runs: list[RunRecord], out: Path) -> dict:
    """``results.json``, ``report.md``, ``curves.png`` and ``return_vs_params.png`` for these runs."""
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
        else:
            model = XiSAC.load(run.path / "model.safetensors", device="cpu")
            obs = np.zeros(model.observation_space.shape, dtype=np.float32)
            run.latency_ms = inference_latency_ms(model, obs, deterministic=True)
    scores = score_matrices(runs)
    aggregates = iqm_and_mean(scores)
    probabilities = improvement(scores, [("xinet", "small"), ("xinet", "unpruned")])
    rows: dict[str, dict] = {}
    for variant in scores:
        group = [r for r in runs if r.variant == variant]

        def mean_of(get):
            values = [get(r) for r in group]
            return None if any(v is None for v in values) else float(np.mean(values))

        rows[variant] = {**aggregates[variant], "seeds": sorted(r.seed for r in group),
                         "final_returns": [r.final_return for r in sorted(group, key=lambda r: r.seed)],
                         "params_train": mean_of(lambda r: r.summary["params_final"]["train"]),
                         "params_deploy": mean_of(lambda r: r.summary["params_final"]["deploy"]),
                         "flops_update": mean_of(lambda r: (r.summary.get("flops_final") or {}).get("update")),
                         "steps_per_second": mean_of(lambda r: r.summary["steps_per_second"]),
                         "latency_ms": mean_of(lambda r: r.latency_ms),
                         "total_steps": mean_of(lambda r: r.summary["total_steps"])}
    curve_data = curves(runs)
    results = {"env": env_id, "variants": rows, "probability_of_improvement": probabilities, "curves": curve_data,
               "runs": [str(r.path) for r in runs]}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    plot_curves(curve_data, out / "curves.png", env_id)
    plot_return_vs_params(rows, out / "return_vs_params.png", env_id)
    (out / "report.md").write_text(render_markdown(env_id, rows, probabilities))
    return results


def _fmt(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def render_markdown(env_id: str, rows: dict[str, dict], probabilities: dict[str, dict]) -> str:
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
    lines += ["", "![curves](curves.png)", "", "![return against parameters](return_vs_params.png)", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    def body() -> int:
        args = build_parser().parse_args(argv)
        out = Path(args.out).resolve()  # Ray workers do not share this process's working directory
        if args.runs:
            runs = [read_run(p) for p in args.runs]
        else:
            if not args.env:
                raise UsageError("--env is required (or give --runs DIR ...)")
            check_env_id(args.env)
            variants = [v.strip() for v in args.variants.split(",") if v.strip()]
            unknown = [v for v in variants if v not in ALL_VARIANTS]
            if unknown or not variants:
                raise UsageError(f"unknown variant(s) {', '.join(unknown) or '(none)'}: choose from "
                                 f"{', '.join(ALL_VARIANTS)}")
            probe = resolve_config(args.env, args.config, args.overrides, args.total_steps)  # bad keys fail here
            del probe
            run_dirs = run_all(args, variants, out)
            runs = [read_run(p) for p in run_dirs]
        results = report(runs, out)
        for variant, row in results["variants"].items():
            print(f"{PROG}: {variant}: IQM {row['iqm']:.1f} [{row['iqm_ci'][0]:.1f}, {row['iqm_ci'][1]:.1f}], "
                  f"{_fmt(row['params_deploy'])} deployable parameters")
        print(f"{PROG}: wrote {out / 'report.md'}", file=sys.stderr)
        return 0

    run_main(PROG, body)


if __name__ == "__main__":
    main()
