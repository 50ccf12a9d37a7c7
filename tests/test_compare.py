"""xinet-compare on local Ray: every file, aggregates equal to rliable on the runs' returns, and bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from rliable import library as rly
from rliable import metrics

TINY = ["--total-steps", "500", "--set", "learning_starts=250", "--set", "ofenet_pretrain_steps=10",
        "--set", "batch_size=32", "--set", "buffer_size=1000", "--set", "eval_freq=250", "--set", "eval_episodes=1",
        "--set", "ofenet_layers=2", "--set", "ofenet_units=8", "--set", "actor_widths=[32,32]",
        "--set", "critic_widths=[32,32]", "--set", "prune_start=50", "--set", "prune_interval=50",
        "--set", "prune_patience=1", "--set", "prune_strength=1.0", "--set", "pi_lr=0.05", "--set", "pi_update_every=1"]


def compare(*args, cwd=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_DEDUP_LOGS": "0"}
    return subprocess.run([sys.executable, "-m", "xinet_rl.cli.compare", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp") / "out"
    proc = compare("--env", "HalfCheetah-v4", "--variants", "xinet,small", "--seeds", 2, "--workers", 2,
                   "--out", out, *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_compare_writes_every_file(comparison):
    for name in ("report.md", "results.json", "curves.png", "return_vs_params.png"):
        assert (comparison / name).stat().st_size > 0, name
    runs = sorted(p.name for p in (comparison / "runs").iterdir())
    assert runs == ["small_s0", "small_s1", "xinet_s0", "xinet_s1"]
    for seed in (0, 1):  # small trains the final widths of the same seed's pruned run
        source = json.loads((comparison / "runs" / f"xinet_s{seed}" / "summary.json").read_text())
        small = json.loads((comparison / "runs" / f"small_s{seed}" / "summary.json").read_text())
        assert small["widths_initial"] == source["widths_final"]
    report = (comparison / "report.md").read_text()
    assert "| xinet | 2 |" in report and "| small | 2 |" in report and "P(xinet > small)" in report


def test_aggregates_equal_rliable_on_the_runs(comparison):
    results = json.loads((comparison / "results.json").read_text())
    scores = {}
    for variant in ("xinet", "small"):
        finals = [json.loads((comparison / "runs" / f"{variant}_s{s}" / "summary.json").read_text())
                  ["final_eval_return_mean"] for s in (0, 1)]
        assert results["variants"][variant]["final_returns"] == finals
        scores[variant] = np.array([[f] for f in finals])
    points, intervals = rly.get_interval_estimates(
        scores, lambda x: np.array([metrics.aggregate_iqm(x), metrics.aggregate_mean(x)]), reps=2000,
        random_state=np.random.RandomState(0))
    for variant in scores:
        row = results["variants"][variant]
        assert row["iqm"] == pytest.approx(points[variant][0]) and row["mean"] == pytest.approx(points[variant][1])
        assert row["iqm_ci"] == pytest.approx(list(intervals[variant][:, 0]))
        assert row["mean_ci"] == pytest.approx(list(intervals[variant][:, 1]))
    p, ci = rly.get_interval_estimates({"x": (scores["xinet"], scores["small"])}, metrics.probability_of_improvement,
                                       reps=2000, random_state=np.random.RandomState(0))
    assert results["probability_of_improvement"]["xinet > small"]["probability"] == pytest.approx(p["x"])


def test_finished_runs_are_reused_and_reported_without_training(comparison, tmp_path):
    before = {p: p.stat().st_mtime_ns for p in (comparison / "runs").rglob("summary.json")}
    proc = compare("--env", "HalfCheetah-v4", "--variants", "xinet,small", "--seeds", 2, "--workers", 2,
                   "--out", comparison, *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in (comparison / "runs").rglob("summary.json")} == before
    report_only = tmp_path / "report"
    proc = compare("--runs", *sorted((comparison / "runs").iterdir()), "--out", report_only)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((report_only / "results.json").read_text())["variants"].keys() == {"xinet", "small"}


@pytest.mark.parametrize("args,message", [
    (["--env", "HalfCheetah-v4", "--variants", "xinet,bigger"], "unknown variant(s) bigger"),
    (["--env", "HalfCheetah-v4", "--variants", "small"], "needs the xinet runs"),
    (["--env", "HalfCheetah-v4", "--address", "127.0.0.1:9"], "cannot reach a Ray cluster"),
    (["--runs", "/nonexistent/run"], "is not a finished run"),
])
def test_bad_input_exit_2(tmp_path, args, message):
    proc = compare(*args, "--out", tmp_path / "out", *(TINY if "--env" in args else []))
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert message in proc.stderr and "Traceback" not in proc.stderr
