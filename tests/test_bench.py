"""xinet-bench runs every measurement and reports consistent figures (speed itself is for BENCHMARKS.md): the report's
structure, every timing finite and positive, each reported figure the median of its rounds (or of the per-round
ratios), and the sizes, widths and FLOP ratios those derived from the config."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from support.counts import config_widths, count_widths

ENV_ID, OBS_DIM, ACT_DIM = "HalfCheetah-v4", 17, 6
LATENCY_ROWS = {"unpruned", "xinet 75% removed", "small"}
LATENCY_KINDS = ("pytorch_ms", "onnx_ms", "predict_ms")
TRAINING_ROWS = {"sb3 SAC", "XiSAC sac", "unpruned", "xinet", "xinet 50% removed", "xinet 75% removed"}
INFO_KEYS = {"env", "device", "device_name", "machine", "torch", "threads", "steps", "warmup", "repeats", "batch_size",
             "training", "inference_batch1"}
NETWORK_KEYS = {"ofenet_state": "state", "ofenet_state_action": "state_action", "actor": "actor",
                "critic1": "critic1", "critic2": "critic2"}


def widths_of(variant: str = "xinet", keep: float = 1.0) -> dict:
    """The widths of a benchmarked model from the shipped config: the first ``keep`` of each gated layer's units
    (rounded, at least one) as ``prune_to_fraction`` is documented to keep."""
    widths = config_widths(ENV_ID, OBS_DIM, ACT_DIM, [f"variant={variant}"] if variant != "xinet" else None)
    for key in NETWORK_KEYS.values():
        widths[key] = [max(1, round(w * keep)) for w in widths[key]]
    return widths


def networks(widths: dict) -> dict:
    """As ``summary.json`` and the bench report name the layer widths."""
    return {name: widths[key] for name, key in NETWORK_KEYS.items()}


def folded(widths: dict, obs_dim: int = OBS_DIM, act_dim: int = ACT_DIM) -> tuple[int, int]:
    """(weights and biases, matmul FLOPs) of the deployable policy as exported: a plain MLP-DenseNet state block (BN
    folded into the linear map, which gets a bias) and a ReLU actor with its mean head only."""
    weights, biases, fan_in = 0, 0, obs_dim
    for width in widths["ofenet_state"]:
        weights, biases, fan_in = weights + fan_in * width, biases + width, fan_in + width
    for width in widths["actor"]:
        weights, biases, fan_in = weights + fan_in * width, biases + width, width
    weights, biases = weights + fan_in * act_dim, biases + act_dim
    return weights + biases, 2 * weights


def positive(x) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


def median_ratio(a, b) -> float:
    return float(np.median(np.asarray(a) / np.asarray(b)))


def check_latency_rows(rows: dict, rounds: int) -> None:
    assert set(rows) == LATENCY_ROWS
    pruned, small, unpruned = rows["xinet 75% removed"], rows["small"], rows["unpruned"]
    ratio_keys = {f"{kind}_{what}" for kind in ("pytorch", "onnx") for what in ("speedup_vs_unpruned", "vs_small")}
    for name, row in rows.items():
        assert set(row) == {"params_deploy", "flops", "widths", "rounds", *LATENCY_KINDS} | (
            ratio_keys if name == "xinet 75% removed" else set()), name
        assert set(row["rounds"]) == set(LATENCY_KINDS)
        for kind in LATENCY_KINDS:
            assert len(row["rounds"][kind]) == rounds and all(positive(t) for t in row["rounds"][kind]), (name, kind)
            assert row[kind] == float(np.median(row["rounds"][kind])), (name, kind)  # the median of its rounds
        assert (row["params_deploy"], row["flops"]) == folded(row["widths"]), name
    # the widths: the config's, and the first quarter of each gated layer's units for the pruned and small ones
    assert unpruned["widths"] == networks(widths_of("unpruned"))
    assert pruned["widths"] == small["widths"] == networks(widths_of("xinet", 0.25))
    assert small["params_deploy"] == pruned["params_deploy"] < unpruned["params_deploy"] / 10
    assert small["flops"] == pruned["flops"] < unpruned["flops"] / 10
    for kind in ("pytorch", "onnx"):
        assert pruned[f"{kind}_vs_small"] == median_ratio(pruned["rounds"][f"{kind}_ms"], small["rounds"][f"{kind}_ms"])
        assert pruned[f"{kind}_speedup_vs_unpruned"] == median_ratio(unpruned["rounds"][f"{kind}_ms"],
                                                                      pruned["rounds"][f"{kind}_ms"])
        assert positive(pruned[f"{kind}_vs_small"]) and positive(pruned[f"{kind}_speedup_vs_unpruned"])


def run_bench(tmp_path, *args):
    out = tmp_path / "bench.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "xinet_rl.cli.bench", *args, "--threads", "1", "--json", str(out)],
                          env=env, capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = json.loads(out.read_text())
    assert set(info) == INFO_KEYS
    assert info["env"] == ENV_ID and info["threads"] == 1 and info["torch"] == torch.__version__
    assert info["device"] == "cpu" and info["device_name"] is None
    return proc, info


@pytest.mark.slow
def test_bench_reports_every_figure(tmp_path):
    rounds = 3  # an odd number: each median is one of the rounds
    proc, info = run_bench(tmp_path, "--steps", "5", "--warmup", "2", "--fill", "300", "--repeats", str(rounds))
    assert (info["steps"], info["warmup"], info["repeats"]) == (5, 2, rounds)
    from xinet_rl.config import resolve_config

    assert info["batch_size"] == resolve_config(ENV_ID).batch_size
    rows = info["training"]
    assert set(rows) == TRAINING_ROWS
    extra = {"sb3 SAC": set(), "XiSAC sac": {"vs_sb3"}, "unpruned": set(), "xinet": {"gating_overhead", "vs_sb3"},
             "xinet 50% removed": {"speedup_vs_gated", "flop_ratio", "efficiency", "speedup_vs_unpruned"}}
    extra["xinet 75% removed"] = extra["xinet 50% removed"]
    for name, row in rows.items():
        own = {"steps_per_s", "rounds"} | ({"flops_update", "params_train"} if name != "sb3 SAC" else set())
        assert set(row) == own | extra[name], name
        assert len(row["rounds"]) == rounds and all(positive(r) for r in row["rounds"]), name
        assert row["steps_per_s"] == float(np.median(row["rounds"])) and row["steps_per_s"] in row["rounds"], name
    # each ratio is the median of the per-round ratios of the two models' rates
    rate = {name: row["rounds"] for name, row in rows.items()}
    assert rows["XiSAC sac"]["vs_sb3"] == median_ratio(rate["XiSAC sac"], rate["sb3 SAC"])
    assert rows["xinet"]["vs_sb3"] == median_ratio(rate["xinet"], rate["sb3 SAC"])
    assert rows["xinet"]["gating_overhead"] == median_ratio(rate["unpruned"], rate["xinet"])
    for name in ("xinet 50% removed", "xinet 75% removed"):
        row = rows[name]
        assert row["speedup_vs_gated"] == median_ratio(rate[name], rate["xinet"])
        assert row["speedup_vs_unpruned"] == median_ratio(rate[name], rate["unpruned"])
        assert row["flop_ratio"] == rows["xinet"]["flops_update"] / row["flops_update"]
        assert row["efficiency"] == row["speedup_vs_gated"] / row["flop_ratio"]
    # sizes from the config: the gated and unpruned agents share their widths, the pruned ones keep the first half
    # and the first quarter of each gated layer's units, the sac variant has no OFENet
    assert rows["xinet"]["params_train"] == rows["unpruned"]["params_train"] == count_widths(widths_of())["train"]
    assert rows["xinet 50% removed"]["params_train"] == count_widths(widths_of("xinet", 0.5))["train"]
    assert rows["xinet 75% removed"]["params_train"] == count_widths(widths_of("xinet", 0.25))["train"]
    assert widths_of("sac")["state"] == [] and widths_of("sac")["aux_dim"] == 0
    assert rows["XiSAC sac"]["params_train"] == count_widths(widths_of("sac"))["train"]
    # FLOPs per update: fewer units, fewer FLOPs; the gate step costs the gated agent more than the unpruned one
    flops = {name: row["flops_update"] for name, row in rows.items() if name != "sb3 SAC"}
    assert all(isinstance(f, int) and f > 0 for f in flops.values())
    assert flops["XiSAC sac"] < flops["unpruned"] < flops["xinet"]
    assert flops["xinet 75% removed"] < flops["xinet 50% removed"] < flops["xinet"]
    assert rows["xinet 50% removed"]["flop_ratio"] > 3 and rows["xinet 75% removed"]["flop_ratio"] > 10
    check_latency_rows(info["inference_batch1"], rounds=rounds)
    assert "gating overhead" in proc.stdout and "steps/s" in proc.stdout


@pytest.mark.slow
def test_bench_latency_only(tmp_path):
    proc, info = run_bench(tmp_path, "--latency-only", "--repeats", "1")
    assert info["training"] == {} and "steps/s" not in proc.stdout and "gating overhead" not in proc.stdout
    assert info["repeats"] == 1
    check_latency_rows(info["inference_batch1"], rounds=1)
    assert "faster than unpruned" in proc.stdout


def test_bench_refuses_cuda_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = subprocess.run([sys.executable, "-m", "xinet_rl.cli.bench", "--device", "cuda"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "no CUDA device" in proc.stderr
