"""GPU checks of the CUDA-graphed update, for one prepared run on a GPU machine:

    python scripts/cuda_check.py [--updates 24] [--json FILE]

1. **Same training**: the same short fixed-seed HalfCheetah-v4 run (1,000 random steps, 20 OFENet pre-training
   updates, then ``--updates`` updates with a gate step every 4th), graphed and eager on the same GPU, losses compared
   after every update; then half the units of every gated layer are pruned and ``--updates`` more are taken (the
   graphs are captured again for the new tensors). Prints the largest relative difference of any loss.
2. **Same actions**: for 40 observations, graphed action selection against the eager forward, deterministic and
   stochastic (torch's generator seeded alike before each call).
3. **Where the graphed update's time goes**: the kernels of 8 eager updates (two with a gate step) under torch's
   profiler: kernels per update and the sum of their GPU time (what a graph replays back to back), largest first.
4. **Acting latency** at batch 1 (synchronised, median of 500 calls): eager forward against the graph replay.
5. **Pre-training rates**: 500 of OFENet's pre-training updates (auxiliary and gate step), eager and graphed.
6. **Update rates** alone (synchronised, 200 updates after 20 untimed): stable-baselines3 SAC's ``train``, and XiSAC
   eager and graphed, unpruned and with 75% of the gated units removed.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from stable_baselines3 import SAC

from xinet_rl import XiSAC
from xinet_rl.update import LOSS_NAMES
from xinet_rl.envs import make_env
from xinet_rl.pruning import prune_to_fraction

ENV = "HalfCheetah-v4"
SHORT = dict(learning_starts=1000, ofenet_pretrain_steps=20, buffer_size=5000, prune_start=10**9)


def losses_per_update(graph: bool, updates: int) -> tuple[list[list[float]], int]:
    model = XiSAC(make_env(ENV, seed=0), seed=0, device="cuda", cuda_graph=graph, **SHORT)
    model.learn(1000)  # random steps only
    recorded: list[list[float]] = []
    for i in range(2 * updates):
        if i == updates:
            prune_to_fraction(model.policy, 0.5)
        model.train(1, model.batch_size)
        if graph:  # the graph's loss tensor, which the agent itself reads only every `check_every` updates
            recorded.append(model.graphed.losses.tolist())
        else:  # eager, `train` logs the losses of every update
            recorded.append([model.logger.name_to_value[f"train/{name}"] for name in LOSS_NAMES])
    return recorded, model.graphed.captures if graph else 0


def profile_update(model: XiSAC, report: dict) -> None:
    from torch.profiler import ProfilerActivity, profile

    model.config.cuda_graph = False  # eager: the profiler sees each kernel
    for _ in range(8):
        model.train(1, model.batch_size)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(8):
            model.train(1, model.batch_size)
        torch.cuda.synchronize()
    model.config.cuda_graph = True
    kernels = [e for e in prof.events() if e.device_type.name == "CUDA"]
    by_name: dict[str, list[float]] = {}
    for e in kernels:
        by_name.setdefault(e.name[:90], []).append(e.time_range.elapsed_us())
    top = sorted(by_name.items(), key=lambda kv: -sum(kv[1]))[:12]
    report["kernels_per_update"] = len(kernels) / 8
    report["kernel_us_per_update"] = sum(sum(v) for v in by_name.values()) / 8
    report["top_kernels"] = [[name, len(v) / 8, sum(v) / 8] for name, v in top]
    print(f"eager update: {report['kernels_per_update']:.0f} kernels, {report['kernel_us_per_update']:.0f} us of "
          "kernel time per update", flush=True)
    for name, count, us in report["top_kernels"]:
        print(f"  {count:6.1f} x  {us:8.1f} us  {name}", flush=True)


def update_rate(model, updates: int = 200) -> float:
    for _ in range(20):
        model.train(1, model.batch_size)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(updates):
        model.train(1, model.batch_size)
    torch.cuda.synchronize()
    return updates / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=24)
    parser.add_argument("--json")
    args = parser.parse_args()
    report: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    print(f"{report['device']}, torch {report['torch']}", flush=True)

    eager, _ = losses_per_update(False, args.updates)
    graphed, captures = losses_per_update(True, args.updates)
    a, b = np.asarray(eager), np.asarray(graphed)
    rel = np.abs(a - b) / np.maximum(np.abs(a), 1e-12)
    n = args.updates
    report["same_training"] = {"updates": 2 * n, "captures": captures, "identical": bool(np.array_equal(a, b)),
                               "max_rel_diff_before_pruning": float(rel[:n].max()),
                               "max_rel_diff_after_pruning": float(rel[n:].max()),
                               "first_updates_rel_diff": rel[:4].max(1).tolist()}
    print("same training:", json.dumps(report["same_training"]), flush=True)

    model = XiSAC(make_env(ENV, seed=0), seed=0, device="cuda", **SHORT)
    model.learn(1000)
    policy, same = model.policy, {}
    observations = torch.as_tensor(model.replay_buffer.observations[:40, 0], device="cuda")
    for deterministic in (True, False):
        outs = []
        for act in (policy._act, policy.graphed_act):
            actions = []
            for k, obs in enumerate(observations):
                torch.manual_seed(k)
                with torch.no_grad():
                    actions.append(act(obs[None], deterministic))
            outs.append(torch.cat(actions))
        same["deterministic" if deterministic else "stochastic"] = {
            "identical": bool(torch.equal(*outs)), "max_abs_diff": float((outs[0] - outs[1]).abs().max())}
    report["same_actions"] = same
    print("same actions:", json.dumps(same), flush=True)

    try:
        profile_update(model, report)
    except Exception as exc:  # a profiler problem must not cost the rates below
        print(f"profile failed: {type(exc).__name__}: {exc}", flush=True)

    obs = observations[:1]
    latency = {}
    for name, act in (("eager", policy._act), ("graphed", policy.graphed_act)):
        times = []
        with torch.no_grad():
            for i in range(550):
                torch.cuda.synchronize()
                start = time.perf_counter()
                act(obs, False)
                torch.cuda.synchronize()
                if i >= 50:
                    times.append(time.perf_counter() - start)
        latency[name] = 1e6 * float(np.median(times))
    report["act_latency_us"] = latency
    print("acting latency at batch 1 (us):", json.dumps(latency), flush=True)

    pretrain = {}
    for name, graph in (("eager", False), ("graphed", True)):
        model = XiSAC(make_env(ENV, seed=0), seed=0, device="cuda", cuda_graph=graph,
                      **{**SHORT, "ofenet_pretrain_steps": 500})
        model.learn(1000)  # random steps only
        torch.cuda.synchronize()
        start = time.perf_counter()
        model.train(0, model.batch_size)  # the pre-training updates alone
        torch.cuda.synchronize()
        pretrain[name] = 500 / (time.perf_counter() - start)
    report["pretrain_updates_per_s"] = pretrain
    print("OFENet pre-training updates/s:", json.dumps(pretrain), flush=True)

    rates = {}
    sac = SAC("MlpPolicy", make_env(ENV, seed=0), learning_starts=1000, buffer_size=5000, seed=0, device="cuda")
    sac.learn(1001)
    rates["sb3 SAC"] = update_rate(sac)
    for name, graph, keep in [("xinet eager", False, 1.0), ("xinet graphed", True, 1.0),
                              ("xinet 75% removed eager", False, 0.25), ("xinet 75% removed graphed", True, 0.25)]:
        model = XiSAC(make_env(ENV, seed=0), seed=0, device="cuda", cuda_graph=graph, **SHORT)
        if keep < 1:
            prune_to_fraction(model.policy, keep)
        model.learn(1001)
        rates[name] = update_rate(model)
        print(f"{name}: {rates[name]:.1f} updates/s", flush=True)
    print(f"sb3 SAC: {rates['sb3 SAC']:.1f} updates/s", flush=True)
    report["updates_per_s"] = rates
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
