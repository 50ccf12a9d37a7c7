"""xinet-eval, xinet-export and the baseline variants of xinet-train, on a short real run."""

import ctypes.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

from xinet_rl import XiSAC
from xinet_rl.envs import make_env
from xinet_rl.export import run_onnx
from xinet_rl.run.errors import UsageError
from xinet_rl.run.paths import arch_networks

TINY = ["--total-steps", "600", "--set", "learning_starts=300", "--set", "ofenet_pretrain_steps=10",
        "--set", "batch_size=32", "--set", "buffer_size=1000", "--set", "eval_freq=600", "--set", "eval_episodes=1",
        "--set", "ofenet_layers=3", "--set", "ofenet_units=8", "--set", "actor_widths=[32,32]",
        "--set", "critic_widths=[32,32]", "--set", "prune_start=50", "--set", "prune_interval=50",
        "--set", "prune_patience=1", "--set", "prune_strength=1.0", "--set", "gate_lr=0.05",
        "--set", "gate_update_every=1",
        "--no-progress"]


def cli(module, *args, cwd=None, extra_env=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(extra_env or {})}
    return subprocess.run([sys.executable, "-m", f"xinet_rl.cli.{module}", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def pruned_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "xinet"
    proc = cli("train", "--env", "HalfCheetah-v4", *TINY, "--out", run)
    assert proc.returncode == 0, proc.stderr[-1500:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["params_final"]["train"] < summary["params_initial"]["train"]  # it really is pruned
    return run


def test_eval_json_agrees_with_evaluate_policy(pruned_run, tmp_path):
    proc = cli("evaluate", pruned_run, "--episodes", 2, "--seed", 3, "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert proc.stderr == "" and not list(tmp_path.iterdir())  # no warning, nothing written (no MUJOCO_LOG.TXT)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    model = XiSAC.load(pruned_run / "model.safetensors", device="cpu")
    returns, lengths = evaluate_policy(model, Monitor(make_env("HalfCheetah-v4", seed=3)), n_eval_episodes=2,
                                       deterministic=True, return_episode_rewards=True)
    assert result["returns"] == pytest.approx(returns, rel=1e-6)
    assert result["return_mean"] == pytest.approx(np.mean(returns), rel=1e-6)
    assert result["return_std"] == pytest.approx(np.std(returns), rel=1e-6, abs=1e-9)
    assert result["episodes"] == 2 and result["episode_lengths"] == lengths
    assert result["params_deploy"] == model.policy.param_counts()["deploy"] and result["latency_ms"] > 0


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_round_trip(pruned_run, tmp_path, fmt):
    out = tmp_path / f"policy.{fmt}"
    proc = cli("export", pruned_run, "--format", fmt, "--out", out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert proc.stderr == "" and [p.name for p in tmp_path.iterdir()] == [out.name]
    assert "max |exported - PyTorch|" in proc.stdout
    model = XiSAC.load(pruned_run / "model.safetensors", device="cpu")
    obs = np.random.default_rng(0).normal(size=(64, 17)).astype(np.float32)
    expected, _ = model.predict(obs, deterministic=True)
    if fmt == "onnx":
        got = run_onnx(out, obs)
    else:
        got = torch.jit.load(str(out))(torch.as_tensor(obs)).detach().numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.slow
def test_onnx_runs_without_this_package(pruned_run, tmp_path):
    out = tmp_path / "policy.onnx"
    assert cli("export", pruned_run, "--format", "onnx", "--out", out).returncode == 0
    code = ("import sys, numpy, onnxruntime; sys.modules['xinet_rl'] = None; sys.modules['torch'] = None; "
            f"s = onnxruntime.InferenceSession(r'{out}'); "
            "print(s.run(['action'], {'obs': numpy.zeros((3, 17), numpy.float32)})[0].shape)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "(3, 6)", proc.stderr[-800:]


def test_arch_from_reads_the_model_file_or_the_summary(pruned_run, tmp_path):
    # committed results keep config.yaml, summary.json and evaluations.csv, not the model file
    results = tmp_path / "results"
    results.mkdir()
    (results / "summary.json").write_text((pruned_run / "summary.json").read_text())
    final = json.loads((pruned_run / "summary.json").read_text())["widths_final"]
    assert arch_networks(str(pruned_run)) == arch_networks(str(pruned_run / "model.safetensors")) == final
    assert arch_networks(str(results)) == final
    (results / "summary.json").write_text(json.dumps({"env": "HalfCheetah-v4"}))  # an unfinished run's
    with pytest.raises(UsageError, match="no widths_final"):
        arch_networks(str(results))


@pytest.mark.slow
def test_small_variant_builds_the_final_widths_and_unpruned_has_no_gates(pruned_run, tmp_path):
    results = tmp_path / "results"  # the pruned run as committed: its summary without its model file
    results.mkdir()
    (results / "summary.json").write_text((pruned_run / "summary.json").read_text())
    small = tmp_path / "small"
    proc = cli("train", "--env", "HalfCheetah-v4", *TINY, "--variant", "small", "--arch-from", results,
               "--out", small)
    assert proc.returncode == 0, proc.stderr[-1500:]
    source = json.loads((pruned_run / "summary.json").read_text())
    summary = json.loads((small / "summary.json").read_text())
    assert summary["widths_initial"] == summary["widths_final"] == source["widths_final"]
    assert summary["params_initial"] == source["params_final"]
    model = XiSAC.load(small / "model.safetensors")
    assert model.policy.gates() == {}
    unpruned = tmp_path / "unpruned"
    proc = cli("train", "--env", "HalfCheetah-v4", *TINY, "--variant", "unpruned", "--out", unpruned)
    assert proc.returncode == 0, proc.stderr[-1500:]
    model = XiSAC.load(unpruned / "model.safetensors")
    assert model.policy.gates() == {} and not any(n.endswith(".keep_prob") for n in model.policy.state_dict())
    assert json.loads((unpruned / "summary.json").read_text())["widths_final"]["ofenet_state"] == [8, 8, 8]


@pytest.mark.slow
def test_sac_variant_has_no_ofenet(tmp_path):
    run = tmp_path / "sac"
    proc = cli("train", "--env", "HalfCheetah-v4", *TINY, "--variant", "sac", "--out", run)
    assert proc.returncode == 0, proc.stderr[-1500:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["widths_final"]["ofenet_state"] == [] and summary["widths_final"]["ofenet_state_action"] == []
    # actor 17-32-32-(6+6) and two critics 23-32-32-1, no auxiliary head
    assert summary["params_final"]["train"] == (17 * 32 + 32 + 32 * 32 + 32 + 2 * (32 * 6 + 6)
                                                + 2 * (23 * 32 + 32 + 32 * 32 + 32 + 33))


@pytest.mark.parametrize("module,args,message", [
    ("evaluate", ["/nonexistent/run"], "no such run directory or model file"),
    ("evaluate", ["EMPTY"], "has no model.safetensors"),
    ("evaluate", ["RUN", "--env", "BipedalWalker-v3"], "registered but cannot be made here: Box2D"),
    ("export", ["/nonexistent/model.safetensors", "--format", "onnx"], "no such run directory"),
    ("export", ["RUN", "--format", "tflite"], "invalid choice"),
    ("train", ["--env", "HalfCheetah-v4", "--variant", "tiny"], "invalid choice"),
    ("train", ["--env", "HalfCheetah-v4", "--variant", "small"], "needs --arch-from"),
    ("train", ["--env", "HalfCheetah-v4", "--variant", "small", "--arch-from", "/nonexistent"], "not found"),
    ("train", ["--env", "HalfCheetah-v4", "--variant", "small", "--arch-from", "EMPTY"],
     "has neither model.safetensors nor summary.json"),
])
def test_bad_input_exit_2(pruned_run, tmp_path, module, args, message):
    (tmp_path / "empty").mkdir()
    args = [str(tmp_path / "empty") if a == "EMPTY" else str(pruned_run) if a == "RUN" else a for a in args]
    proc = cli(module, *args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-1500:]
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_video_is_recorded_or_clearly_refused(pruned_run, tmp_path):
    videos = tmp_path / "videos"
    osmesa = ctypes.util.find_library("OSMesa") is not None
    proc = cli("evaluate", pruned_run, "--episodes", 1, "--video", videos,
               extra_env={"MUJOCO_GL": "osmesa"} if osmesa else {})
    if osmesa:
        assert proc.returncode == 0, proc.stderr[-1500:]
        assert [p.suffix for p in videos.iterdir()] == [".mp4"]
    else:
        assert proc.returncode == 2 and "cannot record video" in proc.stderr and "OSMesa" in proc.stderr
