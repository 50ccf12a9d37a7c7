"""``xinet-bench``: throughput of the training loop and of the deployable policy, measured in one invocation.

Every figure is a ratio against a baseline timed in the same run on the same machine: stable-baselines3's ``SAC``
against ``XiSAC --variant sac`` (same widths and batch), the unpruned OFENet-SAC against the gated agent before any
pruning, the gated agent with 50% and 75% of its units removed against the unpruned one (and against the FLOP
ratio), and the deployable policy's latency at batch 1 in PyTorch and in onnxruntime.
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from stable_baselines3 import SAC

from xinet_rl.agents.xisac import XiSAC
from xinet_rl.cli.common import Parser, int_at_least, resolve_device, run_main
from xinet_rl.config import TrainConfig, agent_kwargs, apply_variant, resolve_config
from xinet_rl.envs import check_env_id, make_env
from xinet_rl.export import export_policy
from xinet_rl.pruning import prune_to_fraction

PROG = "xinet-bench"


def build_parser() -> Parser:
    parser = Parser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="HalfCheetah-v4")
    parser.add_argument("--steps", type=int_at_least(1), default=300, help="timed environment steps per model")
    parser.add_argument("--warmup", type=int_at_least(0), default=50, help="untimed steps with updates first")
    parser.add_argument("--fill", type=int_at_least(1), default=1000, help="random steps before learning")
    parser.add_argument("--repeats", type=int_at_least(1), default=3,
                        help="interleaved rounds of every model; rates and per-round ratios are reported as medians")
    parser.add_argument("--threads", type=int_at_least(1), default=torch.get_num_threads())
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where both SB3 SAC and XiSAC train (latency is always measured on the CPU)")
    parser.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    return parser


def _config(env_id: str, variant: str, fill: int) -> TrainConfig:
    config = resolve_config(env_id, overrides=[f"variant={variant}"] if variant != "xinet" else [])
    config.learning_starts, config.ofenet_pretrain_steps, config.buffer_size = fill, 0, 100_000
    config.prune_start = 10**9  # pruning is applied by hand where it is measured
    return apply_variant(config)


def warm_up(model, warmup: int, fill: int) -> None:
    """Fill the buffer with random steps, then take ``warmup`` steps with updates (untimed)."""
    model.learn(fill + warmup)


def steps_per_second(model, steps: int) -> float:
    """Environment steps per second with one gradient update per step (after :func:`warm_up`)."""
    start = time.perf_counter()
    model.learn(steps, reset_num_timesteps=False)
    return steps / (time.perf_counter() - start)


def xisac(env_id: str, variant: str, fill: int, keep: float = 1.0, device: str | torch.device = "cpu",
          **overrides) -> XiSAC:
    model = XiSAC(make_env(env_id, seed=0), seed=0, device=device,
                  **{**agent_kwargs(_config(env_id, variant, fill)), **overrides})
    if keep < 1.0:
        prune_to_fraction(model.policy, keep)
    return model


def latency_ms(fn, obs, calls: int = 500) -> float:
    for _ in range(50):
        fn(obs)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn(obs)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def main(argv: list[str] | None = None) -> None:
    def body() -> int:
        args = build_parser().parse_args(argv)
        check_env_id(args.env)
        device = resolve_device(args.device)
        torch.set_num_threads(args.threads)
        fill, steps, warmup = args.fill, args.steps, args.warmup
        sac_config = _config(args.env, "sac", fill)
        rows: dict[str, dict] = {}

        sb3 = SAC("MlpPolicy", make_env(args.env, seed=0), learning_starts=fill, batch_size=sac_config.batch_size,
                  buffer_size=100_000, seed=0, device=device, policy_kwargs={"net_arch": sac_config.actor_widths})
        models = {"sb3 SAC": sb3, "XiSAC sac": xisac(args.env, "sac", fill, device=device),
                  "unpruned": xisac(args.env, "unpruned", fill, device=device),
                  "xinet": xisac(args.env, "xinet", fill, device=device),
                  "xinet 50% removed": xisac(args.env, "xinet", fill, 0.5, device),
                  "xinet 75% removed": xisac(args.env, "xinet", fill, 0.25, device)}
        if device.type == "cuda":  # what the CUDA graphs buy
            models["xinet eager"] = xisac(args.env, "xinet", fill, device=device, cuda_graph=False)
        for model in models.values():
            warm_up(model, warmup, fill)
        rates: dict[str, list[float]] = {name: [] for name in models}
        order = list(models)
        for round_ in range(args.repeats):  # interleaved, so that noise on this shared machine hits every model alike
            for name in order if round_ % 2 == 0 else order[::-1]:  # and in alternating order, so that a drift does
                rates[name].append(steps_per_second(models[name], steps))  # not favour the model timed first
        for name, model in models.items():
            rows[name] = {"steps_per_s": float(np.median(rates[name])), "rounds": rates[name]}
            if isinstance(model, XiSAC):
                rows[name].update(flops_update=model.flops()["update"],
                                  params_train=model.policy.param_counts()["train"])

        def ratio(fast: str, slow: str) -> float:
            """Median over rounds of the ratio of two models' rates timed next to each other in the same round."""
            return float(np.median(np.asarray(rates[fast]) / np.asarray(rates[slow])))

        rows["XiSAC sac"]["vs_sb3"] = ratio("XiSAC sac", "sb3 SAC")
        rows["xinet"]["gating_overhead"] = ratio("unpruned", "xinet")
        rows["xinet"]["vs_sb3"] = ratio("xinet", "sb3 SAC")
        if "xinet eager" in rows:
            rows["xinet eager"]["graph_speedup"] = ratio("xinet", "xinet eager")
        for name in ("xinet 50% removed", "xinet 75% removed"):
            speedup = ratio(name, "xinet")
            flop_ratio = rows["xinet"]["flops_update"] / rows[name]["flops_update"]
            rows[name].update(speedup_vs_gated=speedup, flop_ratio=flop_ratio, efficiency=speedup / flop_ratio,
                              speedup_vs_unpruned=ratio(name, "unpruned"))

        inference = {}
        obs = np.zeros(models["xinet"].observation_space.shape, dtype=np.float32)
        with tempfile.TemporaryDirectory() as tmp:
            for name in ("unpruned", "xinet 75% removed"):
                model = models[name]
                onnx_file = Path(tmp) / "policy.onnx"
                export_policy(model, "onnx", onnx_file)
                session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
                inference[name] = {
                    "pytorch_ms": latency_ms(lambda o: model.predict(o, deterministic=True), obs),
                    "onnx_ms": latency_ms(lambda o: session.run(["action"], {"obs": o[None]}), obs)}

        info = {"env": args.env, "device": str(device),
                "device_name": torch.cuda.get_device_name() if device.type == "cuda" else None,
                "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
                "threads": torch.get_num_threads(), "steps": steps, "warmup": warmup, "repeats": args.repeats,
                "batch_size": sac_config.batch_size, "training": rows, "inference_batch1": inference}
        print(f"{PROG}: {args.env}, {info['device_name'] or device}, torch {info['torch']}, {info['threads']} threads, "
              f"median of {args.repeats} interleaved rounds of {steps} steps per model (one update per step), batch "
              f"{sac_config.batch_size}; ratios are medians of the per-round ratios")
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
        for name, row in inference.items():
            print(f"latency batch 1, {name}: PyTorch {row['pytorch_ms']:.3f} ms, onnxruntime {row['onnx_ms']:.3f} ms")
        if args.json:
            Path(args.json).write_text(json.dumps(info, indent=2) + "\n")
        return 0

    run_main(PROG, body)


if __name__ == "__main__":
    main()
