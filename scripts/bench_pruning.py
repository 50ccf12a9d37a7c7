"""Benchmark: gradient-update time of the HalfCheetah model, unpruned and with 50% and 75% of the units of every
gated layer removed, measured in one run, against the FLOP ratio of the same models.

    python scripts/bench_pruning.py [--updates 200] [--warmup 30] [--threads N] [--json FILE]

Prints a table and, with ``--json``, writes the figures. The speed-up of a pruned model is
``time(unpruned) / time(pruned)``, the median over rounds of the ratio within a round; its efficiency is the
speed-up divided by the FLOP ratio. The time spent in matrix-multiply kernels alone (profiled separately) shows
how much of the update the FLOP count describes.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from xinet_rl import XiSAC
from xinet_rl.envs import make_env
from xinet_rl.memory import keep_freed_memory
from xinet_rl.pruning import prune_to_fraction


def build(keep_fraction: float, seed: int = 0) -> XiSAC:
    """A HalfCheetah-v4 XiSAC with a filled replay buffer and ``keep_fraction`` of every gated layer's units."""
    env = make_env("HalfCheetah-v4", seed=seed)
    model = XiSAC(env, seed=seed, device="cpu", learning_starts=2000, ofenet_pretrain_steps=0, buffer_size=5000,
                  prune_start=10**9)
    model.learn(2000)  # random actions fill the buffer; no update yet
    if keep_fraction < 1.0:
        prune_to_fraction(model.policy, keep_fraction)
    return model


def time_updates(model: XiSAC, updates: int, warmup: int) -> float:
    model.train(warmup, model.batch_size)
    start = time.perf_counter()
    model.train(updates, model.batch_size)
    return (time.perf_counter() - start) / updates


def matmul_seconds(model: XiSAC, updates: int = 20) -> float:
    """Seconds per update spent inside matrix-multiply kernels (profiler self time of ``mm``, ``addmm``, ``bmm``):
    the part of the update that the FLOP count describes."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        model.train(updates, model.batch_size)
    total_us = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in ("aten::mm", "aten::addmm", "aten::bmm"))
    return total_us / 1e6 / updates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3,
                        help="interleaved rounds; times and per-round speed-ups are reported as medians")
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as every xinet command does
    fractions = {"unpruned": 1.0, "50% removed": 0.5, "75% removed": 0.25}
    models = {name: build(f) for name, f in fractions.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    order = list(models)
    for round_ in range(args.repeats):  # interleave, so that machine noise hits every model alike, in alternating
        for name in order if round_ % 2 == 0 else order[::-1]:  # order, so that a drift favours none of them
            times[name].append(time_updates(models[name], args.updates, args.warmup))
    mm_times = {name: matmul_seconds(model) for name, model in models.items()}
    base_flops = models["unpruned"].flops()["update"]
    rows = []
    for name, model in models.items():
        t = float(np.median(times[name]))
        speedup = float(np.median(np.asarray(times["unpruned"]) / np.asarray(times[name])))  # per-round ratios
        flops = model.flops()["update"]
        rows.append({"model": name, "params_train": model.policy.param_counts()["train"], "flops_update": flops,
                     "ms_per_update": round(1000 * t, 2), "updates_per_s": round(1 / t, 1),
                     "speedup": round(speedup, 2), "flop_ratio": round(base_flops / flops, 2),
                     "efficiency": round(speedup / (base_flops / flops), 2),
                     "matmul_ms_per_update": round(1000 * mm_times[name], 2),
                     "matmul_speedup": round(mm_times["unpruned"] / mm_times[name], 2)})
    info = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "updates": args.updates, "repeats": args.repeats, "rows": rows}
    print(f"torch {info['torch']}, {info['threads']} threads, {args.updates} updates x {args.repeats} rounds, batch 256")
    print(f"{'model':<12} {'params':>8} {'GFLOP/upd':>9} {'ms/upd':>8} {'upd/s':>7} {'speed-up':>8} {'FLOP ratio':>10} "
          f"{'efficiency':>10} {'matmul ms':>9} {'matmul speed-up':>15}")
    for r in rows:
        print(f"{r['model']:<12} {r['params_train']:>8} {r['flops_update'] / 1e9:>9.3f} {r['ms_per_update']:>8} "
              f"{r['updates_per_s']:>7} {r['speedup']:>8} {r['flop_ratio']:>10} {r['efficiency']:>10} "
              f"{r['matmul_ms_per_update']:>9} {r['matmul_speedup']:>15}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(info, handle, indent=2)


if __name__ == "__main__":
    main()
