"""``xinet-bench``: throughput of the training loop and of the deployable policy, measured in one invocation.

Every figure is a ratio against a baseline timed in the same run on the same machine: stable-baselines3's ``SAC``
against ``XiSAC --variant sac`` (same widths and batch), the unpruned OFENet-SAC against the gated agent before any
pruning, the gated agent with 50% and 75% of its units removed against the unpruned one (and against the FLOP
ratio), and the latency at batch 1 of three deployable (folded) policies in PyTorch and in onnxruntime: the unpruned
one, the 75%-removed one, and a dense ``small`` policy built at the 75%-removed widths (what pruning should match).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from xinet_rl.cli.common import Parser, int_at_least, plain, resolve_device, run_main
from xinet_rl.envs import check_env_id
from xinet_rl.run.bench import run_bench

PROG = "xinet-bench"


def build_parser() -> Parser:
    about = plain(__doc__.split(":", 1)[1].strip())  # the module docstring after "``xinet-bench``:"
    parser = Parser(prog=PROG, description=about[0].upper() + about[1:])
    parser.add_argument("--env", default="HalfCheetah-v4", help="gymnasium id of a continuous-control environment")
    parser.add_argument("--steps", type=int_at_least(1), default=300, help="timed environment steps per model")
    parser.add_argument("--warmup", type=int_at_least(0), default=50, help="untimed steps with updates first")
    parser.add_argument("--fill", type=int_at_least(1), default=1000, help="random steps before learning")
    parser.add_argument("--repeats", type=int_at_least(1), default=3,
                        help="interleaved rounds of every model; rates and per-round ratios are reported as medians")
    parser.add_argument("--threads", type=int_at_least(1), default=torch.get_num_threads(),
                        help="torch threads (and onnxruntime's); the default is torch's own on this machine")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where both SB3 SAC and XiSAC train (the deployable policies are timed on the CPU)")
    parser.add_argument("--latency-only", action="store_true",
                        help="skip the training measurement: build the models and time the deployable policies only")
    parser.add_argument("--json", metavar="FILE", help="write the figures as JSON (default: printed only)")
    return parser


def main(argv: list[str] | None = None) -> None:
    def body() -> int:
        args = build_parser().parse_args(argv)
        check_env_id(args.env)
        device = resolve_device(args.device)
        info = run_bench(args.env, device, args.threads, args.steps, args.warmup, args.fill, args.repeats,
                         args.latency_only)
        print(f"{PROG}: {args.env}, {info['device_name'] or device}, torch {info['torch']}, {info['threads']} threads")
        if info["training"]:
            print_training(info["training"], args.repeats, args.steps, info["batch_size"])
        print_latency(info["inference_batch1"], args.repeats)
        if args.json:
            Path(args.json).write_text(json.dumps(info, indent=2) + "\n")
        return 0

    run_main(PROG, body)


def print_training(rows: dict[str, dict], repeats: int, steps: int, batch_size: int) -> None:
    print(f"training: median of {repeats} interleaved rounds of {steps} steps per model (one update per step), batch "
          f"{batch_size}; ratios are medians of the per-round ratios")
    print(f"{'model':<20} {'steps/s':>8} {'GFLOP/upd':>10}  ratio")
    for name, row in rows.items():
        flops = row.get("flops_update")
        note = ""
        if "vs_sb3" in row:
            note = f"{row['vs_sb3']:.2f}x sb3 SAC"
        if "gating_overhead" in row:
            note = (f"gating overhead {row['gating_overhead']:.2f}x (unpruned / gated time), "
                    f"{row['vs_sb3']:.2f}x sb3 SAC")
        elif "graph_speedup" in row:
            note = f"CUDA graphs: gated {row['graph_speedup']:.2f}x faster than this eager update"
        elif "efficiency" in row:
            note = (f"speed-up {row['speedup_vs_gated']:.2f}x over gated ({row['speedup_vs_unpruned']:.2f}x over "
                    f"unpruned), FLOP ratio {row['flop_ratio']:.2f}x, efficiency {row['efficiency']:.2f}")
        print(f"{name:<20} {row['steps_per_s']:>8.1f} {'' if flops is None else f'{flops / 1e9:.3f}':>10}  {note}")


def print_latency(rows: dict[str, dict], repeats: int) -> None:
    print(f"deployable policy (folded), batch 1, ms: median of {repeats} interleaved rounds of the median of 500 "
          f"calls; PyTorch and onnxruntime on the CPU, predict = model.predict on the training device (unfolded, with "
          f"SB3's observation handling)")
    print(f"{'policy':<20} {'params':>8} {'kFLOP':>7} {'PyTorch':>8} {'onnxrt':>8} {'predict':>8}")
    for name, row in rows.items():
        print(f"{name:<20} {row['params_deploy']:>8} {row['flops'] / 1e3:>7.1f} {row['pytorch_ms']:>8.3f} "
              f"{row['onnx_ms']:>8.3f} {row['predict_ms']:>8.3f}")
    pruned = rows["xinet 75% removed"]
    print(f"75% removed: {pruned['pytorch_speedup_vs_unpruned']:.2f}x / {pruned['onnx_speedup_vs_unpruned']:.2f}x "
          f"faster than unpruned (PyTorch / onnxruntime), {pruned['pytorch_vs_small']:.2f}x / "
          f"{pruned['onnx_vs_small']:.2f}x the time of small; ratios are medians of the per-round ratios")


if __name__ == "__main__":
    main()
