"""Throughput of the training loop and latency of the deployable policy, timed in interleaved rounds in one process
(``xinet-bench``): this machine's speed drifts, so only figures timed next to each other compare.

Every model is timed in each round, in alternating order, and ratios are medians of the per-round ratios.
"""

from __future__ import annotations

import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import torch
from stable_baselines3 import SAC
from torch import nn

from xinet_rl.agents.xisac import XiSAC
from xinet_rl.config import TrainConfig, agent_kwargs, apply_variant, resolve_config
from xinet_rl.envs import make_env
from xinet_rl.export import DeployPolicy, export_policy
from xinet_rl.pruning import prune_to_fraction
from xinet_rl.run.latency import action_latency_ms
from xinet_rl.structure import Widths

LATENCY_CALLS, LATENCY_WARMUP = 500, 50


def bench_config(env_id: str, variant: str, fill: int) -> TrainConfig:
    """The shipped configuration of ``variant``, learning after ``fill`` random steps, without OFENet pre-training
    and without pruning (which is applied by hand where it is measured).

    :param env_id: the environment id
    :param variant: ``xinet``, ``unpruned``, ``small`` or ``sac``
    :param fill: random steps before learning
    :return: the configuration
    """
    config = resolve_config(env_id, overrides=[f"variant={variant}"] if variant != "xinet" else [])
    config.learning_starts, config.ofenet_pretrain_steps, config.buffer_size = fill, 0, 100_000
    config.prune_start = 10**9  # pruning is applied by hand where it is measured
    return apply_variant(config)


def warm_up(model: Any, warmup: int, fill: int) -> None:
    """Fill the buffer with random steps, then take ``warmup`` steps with updates (untimed).

    :param model: an SB3 algorithm (XiSAC or SAC)
    :param warmup: steps with updates
    :param fill: random steps first (the model's ``learning_starts``)
    """
    model.learn(fill + warmup)


def steps_per_second(model: Any, steps: int) -> float:
    """Environment steps per second with one gradient update per step (after :func:`warm_up`).

    :param model: an SB3 algorithm (XiSAC or SAC)
    :param steps: timed steps
    :return: the rate
    """
    start = time.perf_counter()
    model.learn(steps, reset_num_timesteps=False)
    return steps / (time.perf_counter() - start)


def xisac(env_id: str, variant: str, fill: int, keep: float = 1.0, device: str | torch.device = "cpu",
          **overrides: Any) -> XiSAC:
    """An XiSAC agent of :func:`bench_config`, with all but ``keep`` of its units removed.

    :param env_id: the environment id
    :param variant: ``xinet``, ``unpruned``, ``small`` or ``sac``
    :param fill: random steps before learning
    :param keep: fraction of the units kept
    :param device: where it trains
    :param overrides: keyword arguments of :class:`~xinet_rl.agents.xisac.XiSAC` over the configuration's
    :return: the agent
    """
    model = XiSAC(make_env(env_id, seed=0), seed=0, device=device,
                  **{**agent_kwargs(bench_config(env_id, variant, fill)), **overrides})
    if keep < 1.0:
        prune_to_fraction(model.policy, keep)
    return model


def training_rows(env_id: str, fill: int, steps: int, warmup: int, repeats: int, device: torch.device,
                  sac_config: TrainConfig) -> tuple[dict[str, Any], dict[str, dict]]:
    """Every training model timed in interleaved rounds: the models (the latency rows reuse some) and their rows
    (rates and ratios).

    :param env_id: the environment id
    :param fill: random steps before learning
    :param steps: timed steps per model and round
    :param warmup: untimed steps with updates first
    :param repeats: rounds
    :param device: where the models train
    :param sac_config: the ``sac`` variant's configuration (SB3 SAC's batch and widths)
    :return: ``(models, rows)``
    """
    rows: dict[str, dict] = {}
    sb3 = SAC("MlpPolicy", make_env(env_id, seed=0), learning_starts=fill, batch_size=sac_config.batch_size,
              buffer_size=100_000, seed=0, device=device, policy_kwargs={"net_arch": sac_config.actor_widths})
    models = {"sb3 SAC": sb3, "XiSAC sac": xisac(env_id, "sac", fill, device=device),
              "unpruned": xisac(env_id, "unpruned", fill, device=device),
              "xinet": xisac(env_id, "xinet", fill, device=device),
              "xinet 50% removed": xisac(env_id, "xinet", fill, 0.5, device),
              "xinet 75% removed": xisac(env_id, "xinet", fill, 0.25, device)}
    if device.type == "cuda":  # what the CUDA graphs buy
        models["xinet eager"] = xisac(env_id, "xinet", fill, device=device, cuda_graph=False)
    for model in models.values():
        warm_up(model, warmup, fill)
    rates: dict[str, list[float]] = {name: [] for name in models}
    order = list(models)
    for round_ in range(repeats):  # interleaved, so that noise on this shared machine hits every model alike
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


def latency_rows(models: dict[str, XiSAC], threads: int, rounds: int) -> dict[str, dict]:
    """Batch-1 latency of each model's folded deployable policy on the CPU, in PyTorch and onnxruntime (``threads``
    threads each), and of ``model.predict`` (the unfolded acting path, with SB3's observation handling), in
    ``rounds`` interleaved rounds: medians over rounds, and the 75%-removed policy's ratios to the unpruned and to
    the ``small`` one as medians of the per-round ratios. Its matmul FLOPs and parameters are the folded module's.

    :param models: ``unpruned``, ``xinet 75% removed`` and ``small``
    :param threads: threads of PyTorch and onnxruntime
    :param rounds: interleaved rounds (each the median of 500 calls after 50 untimed ones)
    :return: a row per model
    """
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
                times[name][kind].append(action_latency_ms(timers[name][kind], obs, LATENCY_CALLS, LATENCY_WARMUP))
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


def run_bench(env_id: str, device: torch.device, threads: int, steps: int = 300, warmup: int = 50, fill: int = 1000,
              repeats: int = 3, latency_only: bool = False) -> dict:
    """Time the training models (unless ``latency_only``) and the deployable policies: stable-baselines3's ``SAC``
    against ``XiSAC --variant sac``, the unpruned OFENet-SAC against the gated agent, the gated agent with 50% and
    75% of its units removed, and the batch-1 latency of the unpruned, the 75%-removed and a dense ``small`` policy
    at the 75%-removed widths.

    :param env_id: the environment id
    :param device: where the models train (the deployable policies are timed on the CPU)
    :param threads: torch threads (set for this process) and onnxruntime's
    :param steps: timed environment steps per model and round
    :param warmup: untimed steps with updates first
    :param fill: random steps before learning
    :param repeats: interleaved rounds of every model
    :param latency_only: build the models untrained and time the deployable policies only
    :return: ``env``, ``device``, ``device_name``, ``machine``, ``torch``, ``threads``, ``steps``, ``warmup``,
        ``repeats``, ``batch_size``, ``training`` (rows by model; empty with ``latency_only``) and
        ``inference_batch1`` (rows by policy)
    """
    torch.set_num_threads(threads)
    sac_config = bench_config(env_id, "sac", fill)
    if latency_only:  # only the models the latency rows need, untrained: latency does not depend on it
        models: dict[str, Any] = {"unpruned": xisac(env_id, "unpruned", fill, device=device),
                                  "xinet 75% removed": xisac(env_id, "xinet", fill, 0.25, device)}
        rows: dict[str, dict] = {}
    else:
        models, rows = training_rows(env_id, fill, steps, warmup, repeats, device, sac_config)
    # `small`: no gates, built at the pruned model's widths from scratch (as --variant small --arch-from does)
    pruned_widths = Widths.from_dict(models["xinet 75% removed"].policy.widths.to_dict())
    deployable = {"unpruned": models["unpruned"], "xinet 75% removed": models["xinet 75% removed"],
                  "small": xisac(env_id, "unpruned", fill, device=device, widths=pruned_widths)}
    inference = latency_rows(deployable, threads, repeats)
    return {"env": env_id, "device": str(device),
            "device_name": torch.cuda.get_device_name() if device.type == "cuda" else None,
            "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "steps": steps, "warmup": warmup, "repeats": repeats,
            "batch_size": sac_config.batch_size, "training": rows, "inference_batch1": inference}
