"""xinet-bench runs every measurement and reports consistent figures (speed itself is for BENCHMARKS.md)."""

import json
import os
import subprocess
import sys


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
    assert set(info["inference_batch1"]) == {"unpruned", "xinet 75% removed"}
    assert info["threads"] == 1 and info["torch"] and "gating overhead" in proc.stdout
    assert info["device"] == "cpu" and info["device_name"] is None


def test_bench_refuses_cuda_without_a_gpu():
    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = subprocess.run([sys.executable, "-m", "xinet_rl.cli.bench", "--device", "cuda"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "no CUDA device" in proc.stderr
