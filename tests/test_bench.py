"""xinet-bench runs every measurement and reports consistent figures (speed itself is for BENCHMARKS.md)."""

import json
import os
import subprocess
import sys

import numpy as np

LATENCY_ROWS = {"unpruned", "xinet 75% removed", "small"}


def folded_params(widths: dict, obs_dim: int = 17, act_dim: int = 6) -> int:
    """Weights and biases of a plain MLP-DenseNet state block and ReLU actor with a mean head of these widths."""
    total, fan_in = 0, obs_dim
    for width in widths["ofenet_state"]:
        total, fan_in = total + (fan_in + 1) * width, fan_in + width
    for width in widths["actor"]:
        total, fan_in = total + (fan_in + 1) * width, width
    return total + (fan_in + 1) * act_dim


def check_latency_rows(rows: dict, rounds: int) -> None:
    assert set(rows) == LATENCY_ROWS
    for row in rows.values():
        assert all(row[k] > 0 and len(row["rounds"][k]) == rounds for k in ("pytorch_ms", "onnx_ms", "predict_ms"))
        assert row["params_deploy"] == folded_params(row["widths"])
    pruned, small, unpruned = rows["xinet 75% removed"], rows["small"], rows["unpruned"]
    assert small["widths"] == pruned["widths"] and small["params_deploy"] == pruned["params_deploy"]
    assert unpruned["params_deploy"] > 10 * pruned["params_deploy"]
    for kind in ("pytorch", "onnx"):
        per_round = np.asarray(pruned["rounds"][f"{kind}_ms"]) / np.asarray(small["rounds"][f"{kind}_ms"])
        assert abs(pruned[f"{kind}_vs_small"] - float(np.median(per_round))) < 1e-9
        assert pruned[f"{kind}_speedup_vs_unpruned"] > 0


def test_bench_reports_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "xinet_rl.cli.bench", "--steps", "5", "--warmup", "2", "--fill",
                           "300", "--repeats", "2", "--threads", "1", "--json", str(out)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = json.loads(out.read_text())
    rows = info["training"]
    assert set(rows) == {"sb3 SAC", "XiSAC sac", "unpruned", "xinet", "xinet 50% removed", "xinet 75% removed"}
    assert all(r["steps_per_s"] > 0 and len(r["rounds"]) == 2 for r in rows.values())
    assert rows["xinet"]["params_train"] == 652_198 and rows["unpruned"]["params_train"] == 652_198
    assert rows["xinet 50% removed"]["flop_ratio"] > 3 and rows["xinet 75% removed"]["flop_ratio"] > 10
    per_round = [a / b for a, b in zip(rows["XiSAC sac"]["rounds"], rows["sb3 SAC"]["rounds"])]
    assert abs(rows["XiSAC sac"]["vs_sb3"] - sum(per_round) / 2) < 1e-9  # median of two paired rounds
    check_latency_rows(info["inference_batch1"], rounds=2)
    assert info["threads"] == 1 and info["torch"] and "gating overhead" in proc.stdout
    assert info["device"] == "cpu" and info["device_name"] is None


def test_bench_latency_only(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "xinet_rl.cli.bench", "--latency-only", "--repeats", "1",
                           "--threads", "1", "--json", str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = json.loads(out.read_text())
    assert info["training"] == {} and "steps/s" not in proc.stdout
    check_latency_rows(info["inference_batch1"], rounds=1)
    assert info["inference_batch1"]["unpruned"]["widths"]["ofenet_state"] == [30] * 8
    assert "faster than unpruned" in proc.stdout


def test_bench_refuses_cuda_without_a_gpu():
    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = subprocess.run([sys.executable, "-m", "xinet_rl.cli.bench", "--device", "cuda"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "no CUDA device" in proc.stderr
