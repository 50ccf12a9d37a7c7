"""Benchmark: gradient-update time of the HalfCheetah model, unpruned and with 50% and 75% of the units of every
gated layer removed, against the FLOP ratio of the same models, and against dense models built at the same widths.

    python scripts/bench_pruning.py [--updates 200] [--warmup 30] [--repeats 3] [--threads N] [--json FILE]

Times six models in one process, in interleaved rounds: the gated agent unpruned and pruned by 50% and 75% (every
gated layer cut with the pruner), and beside each a dense model without gates built at its widths from scratch
(``unpruned, no gates`` at the full widths; ``small 50%`` and ``small 75%`` at the pruned widths, what ``--variant
small --arch-from`` trains). Prints a table and, with ``--json``, writes the figures.

The speed-up of a model is ``time(unpruned) / time(model)``, the median over rounds of the ratio within a round;
its efficiency is the speed-up divided by the FLOP ratio. ``/ dense`` compares a gated model with its dense
counterpart at the same widths (time ratio, median of the per-round ratios, and FLOP ratio): at full width it is
the gating overhead; a pruned model whose time ratio is no larger than the unpruned one's carries nothing from the
surgery beside its gates. The time spent in matrix-multiply kernels alone (profiled separately) shows how much of
the update the FLOP count describes.
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
from xinet_rl.structure import Widths

# gated model -> its dense counterpart at the same widths
DENSE = {"unpruned": "unpruned, no gates", "50% removed": "small 50%", "75% removed": "small 75%"}


def build(keep_fraction: float = 1.0, seed: int = 0, **kwargs) -> XiSAC:
    """A HalfCheetah-v4 XiSAC with a filled replay buffer and ``keep_fraction`` of every gated layer's units;
    ``kwargs`` go to :class:`XiSAC` (``gated=False, widths=...`` for a dense model at given widths)."""
    env = make_env("HalfCheetah-v4", seed=seed)
    model = XiSAC(env, seed=seed, device="cpu", learning_starts=2000, ofenet_pretrain_steps=0, buffer_size=5000,
                  prune_start=10**9, **kwargs)
    model.learn(2000)  # random actions fill the buffer; no update yet
    if keep_fraction < 1.0:
        prune_to_fraction(model.policy, keep_fraction)
    return model


def dense_like(model: XiSAC) -> XiSAC:
    """A model without gates built from scratch at ``model``'s current widths."""
    return build(gated=False, widths=Widths.from_dict(model.policy.widths.to_dict()))


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
    models.update({DENSE[name]: dense_like(models[name]) for name in fractions})
    times: dict[str, list[float]] = {name: [] for name in models}
    order = list(models)
    for round_ in range(args.repeats):  # interleave, so that machine noise hits every model alike, in alternating
        for name in order if round_ % 2 == 0 else order[::-1]:  # order, so that a drift favours none of them
            times[name].append(time_updates(models[name], args.updates, args.warmup))
    mm_times = {name: matmul_seconds(model) for name, model in models.items()}
    flops = {name: model.flops()["update"] for name, model in models.items()}
    base = "unpruned"

    def per_round(a: str, b: str) -> float:
        """Median over rounds of time(a) / time(b), the two timed in the same round."""
        return float(np.median(np.asarray(times[a]) / np.asarray(times[b])))

    rows = []
    for name, model in models.items():
        t = float(np.median(times[name]))
        speedup = per_round(base, name)
        dense = DENSE.get(name)
        rows.append({"model": name, "gated": model.policy.gated, "widths": model.policy.widths.networks(),
                     "params_train": model.policy.param_counts()["train"], "flops_update": flops[name],
                     "ms_per_update": round(1000 * t, 2), "updates_per_s": round(1 / t, 1),
                     "speedup": round(speedup, 2), "flop_ratio": round(flops[base] / flops[name], 2),
                     "efficiency": round(speedup / (flops[base] / flops[name]), 2),
                     "matmul_ms_per_update": round(1000 * mm_times[name], 2),
                     "matmul_speedup": round(mm_times[base] / mm_times[name], 2),
                     "dense": dense,
                     "time_over_dense": None if dense is None else round(per_round(name, dense), 2),
                     "flops_over_dense": None if dense is None else round(flops[name] / flops[dense], 2)})
    info = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "updates": args.updates, "warmup": args.warmup,
            "repeats": args.repeats, "rounds_ms": {k: [round(1000 * v, 2) for v in vs] for k, vs in times.items()},
            "rows": rows}
    print(f"torch {info['torch']}, {info['threads']} threads, {args.updates} updates x {args.repeats} rounds, "
          "batch 256")
    print(f"{'model':<18} {'params':>8} {'GFLOP/upd':>9} {'ms/upd':>8} {'upd/s':>7} {'speed-up':>8} {'FLOP ratio':>10} "
          f"{'efficiency':>10} {'matmul ms':>9} {'matmul speed-up':>15} {'time / dense':>12} {'FLOPs / dense':>13}")
    for r in rows:
        dense = ("", "") if r["dense"] is None else (r["time_over_dense"], r["flops_over_dense"])
        print(f"{r['model']:<18} {r['params_train']:>8} {r['flops_update'] / 1e9:>9.3f} {r['ms_per_update']:>8} "
              f"{r['updates_per_s']:>7} {r['speedup']:>8} {r['flop_ratio']:>10} {r['efficiency']:>10} "
              f"{r['matmul_ms_per_update']:>9} {r['matmul_speedup']:>15} {dense[0]:>12} {dense[1]:>13}")
    print("time / dense, FLOPs / dense: each gated model against the dense model built at its widths ("
          + "; ".join(f"{g} -> {d}" for g, d in DENSE.items()) + "); at full width, the gating overhead")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(info, handle, indent=2)


if __name__ == "__main__":
    main()
