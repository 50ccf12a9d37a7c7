"""``xinet-bench``: throughput of the training loop and of the deployable policy, measured in one invocation.

Every figure is a ratio against a baseline timed in the same run on the same machine: stable-baselines3's ``SAC``
against ``XiSAC --variant sac`` (same widths and batch), the unpruned OFENet-SAC against the gated agent before any
pruning, the gated agent with 50% and 75% of its units removed against the unpruned one (and against the FLOP
ratio), and the latency at batch 1 of three deployable (folded) policies in PyTorch and in onnxruntime: the unpruned
one, the 75%-removed one, and a dense ``small`` policy built at the 75%-removed widths (what pruning should match).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from stable_baselines3 import SAC
from torch import nn

from xinet_rl.agents.xisac import XiSAC
from xinet_rl.cli.common import Parser, int_at_least, plain, resolve_device, run_main
from xinet_rl.config import TrainConfig, agent_kwargs, apply_variant, resolve_config
from xinet_rl.envs import check_env_id, make_env
from xinet_rl.export import DeployPolicy, export_policy
from xinet_rl.pruning import prune_to_fraction
from xinet_rl.structure import Widths

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
    """Median wall time of ``calls`` calls of ``fn(obs)`` after 50 untimed ones, in milliseconds."""
    for _ in range(50):
        fn(obs)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn(obs)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def training_rows(args: argparse.Namespace, device: torch.device, sac_config: TrainConfig
                  ) -> tuple[dict[str, object], dict[str, dict]]:
    """Every training model timed in interleaved rounds: the models (the latency rows reuse some) and their rows
    (rates and ratios)."""
    fill, steps, warmup = args.fill, args.steps, args.warmup
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
    return models, rows


def latency_rows(models: dict, threads: int, rounds: int) -> dict[str, dict]:
    """Batch-1 latency of each model's folded deployable policy on the CPU, in PyTorch and onnxruntime (``threads``
    threads each), and of ``model.predict`` (the unfolded acting path, with SB3's observation handling), in
    ``rounds`` interleaved rounds: medians over rounds, and the 75%-removed policy's ratios to the unpruned and to
    the ``small`` one as medians of the per-round ratios. Its matmul FLOPs and parameters are the folded module's."""
    timers, rows = {}, {}
    obs = np.zeros(next(iter(models.values())).observation_space.shape, dtype=np.float32)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, model) in enumerate(models.items()):
            onnx_file = Path(tmp) / f"policy{i}.onnx"
            export_policy(model, "onnx", onnx_file)
            session = onnxruntime.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
            deploy = DeployPolicy(model.policy).cpu()  # no tensor requires grad: no autograd graph is recorded
            timers[name] = {
                "pytorch_ms": lambda o, deploy=deploy: deploy(torch.from_numpy(o)[None]),
                "onnx_ms": lambda o, session=session: session.run(["action"], {"obs": o[None]}),
                "predict_ms": lambda o, model=model: model.predict(o, deterministic=True)}
            rows[name] = {"params_deploy": sum(p.numel() for p in deploy.parameters()),
                          "flops": 2 * sum(m.weight.numel() for m in deploy.modules() if isinstance(m, nn.Linear)),
                          "widths": model.policy.widths.networks()}
    times: dict[str, dict[str, list[float]]] = {name: {kind: [] for kind in timer} for name, timer in timers.items()}
    order = list(timers)
    for round_ in range(rounds):  # interleaved and in alternating order, as the training rounds; the models next to
        for kind in ("pytorch_ms", "onnx_ms", "predict_ms"):  # each other for each kind: a ratio compares timings
            for name in order if round_ % 2 == 0 else order[::-1]:  # a fraction of a second apart
                times[name][kind].append(latency_ms(timers[name][kind], obs))
    for name in models:
        rows[name].update({kind: float(np.median(values)) for kind, values in times[name].items()},
                          rounds=times[name])

    def ratio(slow: str, fast: str, kind: str) -> float:
        return float(np.median(np.asarray(times[slow][kind]) / np.asarray(times[fast][kind])))

    pruned = rows["xinet 75% removed"]
    for kind in ("pytorch", "onnx"):
        pruned[f"{kind}_speedup_vs_unpruned"] = ratio("unpruned", "xinet 75% removed", f"{kind}_ms")
        pruned[f"{kind}_vs_small"] = ratio("xinet 75% removed", "small", f"{kind}_ms")
    return rows


def main(argv: list[str] | None = None) -> None:
    def body() -> int:
        args = build_parser().parse_args(argv)
        check_env_id(args.env)
        device = resolve_device(args.device)
        torch.set_num_threads(args.threads)
        fill, steps, warmup = args.fill, args.steps, args.warmup
        sac_config = _config(args.env, "sac", fill)
        if args.latency_only:  # only the models the latency rows need, untrained: latency does not depend on it
            models: dict[str, object] = {"unpruned": xisac(args.env, "unpruned", fill, device=device),
                                         "xinet 75% removed": xisac(args.env, "xinet", fill, 0.25, device)}
            rows: dict[str, dict] = {}
        else:
            models, rows = training_rows(args, device, sac_config)
        # `small`: no gates, built at the pruned model's widths from scratch (as --variant small --arch-from does)
        pruned_widths = Widths.from_dict(models["xinet 75% removed"].policy.widths.to_dict())
        deployable = {"unpruned": models["unpruned"], "xinet 75% removed": models["xinet 75% removed"],
                      "small": xisac(args.env, "unpruned", fill, device=device, widths=pruned_widths)}
        inference = latency_rows(deployable, args.threads, args.repeats)

        info = {"env": args.env, "device": str(device),
                "device_name": torch.cuda.get_device_name() if device.type == "cuda" else None,
                "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
                "threads": torch.get_num_threads(), "steps": steps, "warmup": warmup, "repeats": args.repeats,
                "batch_size": sac_config.batch_size, "training": rows, "inference_batch1": inference}
        print(f"{PROG}: {args.env}, {info['device_name'] or device}, torch {info['torch']}, {info['threads']} threads")
        if rows:
            print_training(rows, args.repeats, steps, sac_config.batch_size)
        print_latency(inference, args.repeats)
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
