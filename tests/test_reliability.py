"""Checkpoints, exact resume, guards and safe loading, on real training runs."""

import json
import os
import pickle
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from xinet_rl import XiSAC
from xinet_rl.checkpoint import CheckpointError, checkpoint_dirs, read_checkpoint
from xinet_rl.io import ModelFileError

SUPPORT = Path(__file__).parent / "support"
UMASK = 0o027  # not the usual 022, so that the permissions of the umask are told from a fixed 0644
SMALL = ["--set", "learning_starts=300", "--set", "ofenet_pretrain_steps=20", "--set", "batch_size=32",
         "--set", "buffer_size=5000", "--set", "ofenet_layers=2", "--set", "ofenet_units=8",
         "--set", "actor_widths=[32,32]", "--set", "critic_widths=[32,32]", "--set", "eval_episodes=1",
         "--set", "prune_start=200", "--set", "prune_interval=100", "--set", "prune_patience=1",
         "--set", "prune_strength=1.0", "--set", "gate_lr=0.05", "--set", "gate_update_every=1", "--no-progress",
         "--device", "cpu"]


def xinet_train(*args, cwd=None, timeout=600, background=False, umask=-1, **popen):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(SUPPORT)}
    cmd = [sys.executable, "-m", "xinet_rl.cli.train", *map(str, args)]
    if background:
        return subprocess.Popen(cmd, cwd=cwd, env=env, text=True, umask=umask,
                                **{"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **popen})
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, umask=umask)


def wait_for_evaluation(run, proc, step=None, timeout=600):
    """Readiness: the evaluation row of ``step`` (any, if None) is in ``evaluations.csv``. Evaluation rows are written
    during training, after ``Checkpoints`` installed the signal handlers at its start (xinet_rl/callbacks.py); a
    polling loop with a generous deadline, as a loaded machine may take long to get there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        csv_file = run / "evaluations.csv"
        if csv_file.exists():
            lines = csv_file.read_text().splitlines()
            if any(",eval," in line and (step is None or line.startswith(f"{step},eval,")) for line in lines):
                return
        time.sleep(0.05)
    raise AssertionError(f"no evaluation row {step or ''} within {timeout} s (exit code {proc.poll()})")


def wait_for_first_evaluation(run, proc, timeout=600):
    wait_for_evaluation(run, proc, None, timeout)


def eval_rows(run_dir):
    import csv

    with (run_dir / "evaluations.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_resume_reproduces_the_uninterrupted_run_bit_for_bit(tmp_path):
    """Run A goes 0 -> 1500 in one go. Run B stops at 900, resumes from its checkpoint at 600 and goes on to 1500.
    Updates, gates, pruning, replay samples, exploration and evaluations must all be identical, and so the budget
    controller's strength, which moves at every gate step. Run B's files, those rewritten by the resume included, get
    the permissions of its umask, and its config.yaml the new total."""
    common = ["--env", "HalfCheetah-v4", *SMALL, "--set", "checkpoint_freq=600", "--set", "eval_freq=500",
              "--set", "target_deploy_params=0.3"]
    a, b = tmp_path / "a", tmp_path / "b"
    first = xinet_train(*common, "--total-steps", 1500, "--out", a)
    assert first.returncode == 0, first.stderr[-1500:]
    part = xinet_train(*common, "--total-steps", 900, "--out", b, umask=UMASK)
    assert part.returncode == 0, part.stderr[-1500:]
    assert [p.name for p in checkpoint_dirs(b)] == ["step_0000000600"]
    assert yaml.safe_load((b / "config.yaml").read_text())["total_steps"] == 900
    resumed = xinet_train("--resume", b, "--total-steps", 1500, "--no-progress", "--device", "cpu", umask=UMASK)
    assert resumed.returncode == 0, resumed.stderr[-1500:]
    config = yaml.safe_load((b / "config.yaml").read_text())
    assert config["total_steps"] == 1500  # the new total is recorded, the rest of the file kept
    assert {k: v for k, v in config.items() if k != "total_steps"} == {
        k: v for k, v in yaml.safe_load((a / "config.yaml").read_text()).items() if k != "total_steps"}
    for path in [b, *b.rglob("*")]:
        expected = (0o777 if path.is_dir() else 0o666) & ~UMASK
        assert stat.S_IMODE(path.stat().st_mode) == expected, f"{path}: {oct(path.stat().st_mode)}"
    state_a = load_file(str(a / "model.safetensors"))
    state_b = load_file(str(b / "model.safetensors"))
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key
    rows_a, rows_b = eval_rows(a), eval_rows(b)
    for row_a, row_b in zip(rows_a, rows_b, strict=True):  # evaluation returns, gates, pruning events
        assert {k: v for k, v in row_a.items() if k != "update_ms"} == {k: v for k, v in row_b.items()
                                                                          if k != "update_ms"}
    assert any(r["event"] == "prune" for r in rows_a)
    strengths = {float(r["prune_strength"]) for r in rows_a if r["event"] == "eval"}
    assert len(strengths) > 1 and 1.0 not in strengths  # the controller moved the strength before each evaluation
    summary_a, summary_b = (json.loads((run / "summary.json").read_text()) for run in (a, b))
    assert summary_b["total_steps"] == 1500 and summary_b["budget"] == summary_a["budget"]
    assert summary_a["budget"]["prune_strength_final"] != 1.0


@pytest.mark.slow
def test_a_final_cut_during_training_is_trained_on_and_resumed_bit_for_bit(tmp_path):
    """With ``final_cut_from`` the final cut comes at the first evaluation from that share of the run on (step 500
    of 1500), training goes on with the cut policy, and only the end cut follows (the policy is within the size).
    Run B stops at 900 and resumes from its checkpoint at 600, after the cut: the cut's record comes back with the
    checkpoint and the run ends as A does."""
    common = ["--env", "HalfCheetah-v4", *SMALL, "--set", "checkpoint_freq=600", "--set", "eval_freq=500",
              "--set", "final_cut_from=0.3", "--set", "final_deploy_params=0.05", "--set", "final_cut_tolerance=2",
              "--set", "final_cut_max_loss=null"]
    a, b = tmp_path / "a", tmp_path / "b"
    first = xinet_train(*common, "--total-steps", 1500, "--out", a)
    assert first.returncode == 0, first.stderr[-1500:]
    part = xinet_train(*common, "--total-steps", 900, "--out", b)
    assert part.returncode == 0, part.stderr[-1500:]
    resumed = xinet_train("--resume", b, "--total-steps", 1500, "--no-progress", "--device", "cpu")
    assert resumed.returncode == 0, resumed.stderr[-1500:]
    summary_a, summary_b = (json.loads((run / "summary.json").read_text()) for run in (a, b))
    cut_a = summary_a["final_cut"]
    assert [c["step"] for c in cut_a["cuts"]] == [500, 1500]
    first_cut = cut_a["cuts"][0]
    assert first_cut["params_deploy"] <= cut_a["target"] < first_cut["params_deploy_before"]
    rows = eval_rows(a)
    events_500 = [r["event"] for r in rows if r["step"] == "500"]
    assert events_500[-3:] == ["eval", "prune", "eval"]  # the policy as trained, the cut, the cut policy
    later = [r for r in rows if int(r["step"]) > 500]
    assert later and all(int(r["params_deploy"]) <= first_cut["params_deploy"] for r in later)
    cut_row = next(r for r in rows if r["step"] == "500" and r["event"] == "prune")
    assert int(later[-1]["train_flops_total"]) > int(cut_row["train_flops_total"])  # trained on after the cut
    assert summary_b["final_cut"] == cut_a
    state_a = load_file(str(a / "model.safetensors"))
    state_b = load_file(str(b / "model.safetensors"))
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key
    for row_a, row_b in zip(rows, eval_rows(b), strict=True):
        assert {k: v for k, v in row_a.items() if k != "update_ms"} == {k: v for k, v in row_b.items()
                                                                        if k != "update_ms"}


@pytest.mark.slow
def test_a_stop_during_pretraining_is_answered_within_an_update_and_resumes_bit_for_bit(tmp_path, monkeypatch):
    """SIGTERM arrives at OFENet's 20th of 200 pre-training updates (sent from the pre-training hook, so at a known
    update, not after a delay). The run stops there with the checkpoint of its step, not after the other 180; the
    resumed run does those first and then matches the uninterrupted run bit for bit, through pruning and evaluations."""
    from xinet_rl.config import TrainConfig, apply_overrides
    from xinet_rl.run.trainer import Interrupted, train

    values = {"learning_starts": 250, "ofenet_pretrain_steps": 200, "batch_size": 32, "buffer_size": 5000,
              "ofenet_layers": 2, "ofenet_units": 8, "actor_widths": [32, 32], "critic_widths": [32, 32],
              "eval_episodes": 1, "eval_freq": 500, "checkpoint_freq": 0, "prune_start": 100, "prune_interval": 100,
              "prune_patience": 1, "prune_strength": 1.0, "gate_lr": 0.05, "gate_update_every": 1,
              "total_steps": 500}

    def run(run_dir, resume_from=None):
        config = apply_overrides(TrainConfig(), dict(values), "the test", "HalfCheetah-v4")
        return train("HalfCheetah-v4", config, 0, run_dir, torch.device("cpu"), progress=False,
                     resume_from=resume_from)

    a, b = tmp_path / "a", tmp_path / "b"
    run(a)
    updates = []

    def hook(done, due):
        updates.append(done)
        if done == 20:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(XiSAC, "pretrain_hook", staticmethod(hook))
    with pytest.raises(Interrupted, match="SIGTERM at step 251"):
        run(b)
    assert updates == list(range(1, 21))  # answered after the update in progress
    [checkpoint] = checkpoint_dirs(b)
    tensors = read_checkpoint(checkpoint)[0]
    assert [int(v) for k, v in tensors.items() if k.endswith("pretrain_done")] == [20]
    monkeypatch.setattr(XiSAC, "pretrain_hook", None)
    run(b, resume_from=checkpoint)
    state_a, state_b = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key
    rows_a, rows_b = eval_rows(a), eval_rows(b)
    assert any(r["event"] == "prune" for r in rows_a)
    for row_a, row_b in zip(rows_a, rows_b, strict=True):
        assert {k: v for k, v in row_a.items() if k != "update_ms"} == {k: v for k, v in row_b.items()
                                                                          if k != "update_ms"}
    summary_a, summary_b = (json.loads((r / "summary.json").read_text()) for r in (a, b))
    assert summary_a["train_flops_total"] == summary_b["train_flops_total"]


@pytest.mark.slow
def test_kill_minus_nine_then_resume_loses_nothing(tmp_path):
    """SIGKILL at a known point, not after a random delay: once the evaluation row of step 1000 is written, the
    checkpoint of step 800 is on disk and the next one is 600 steps away. The resume continues from 800, writes the
    row of 1000 again (once, not twice) and ends with the two newest checkpoints."""
    run = tmp_path / "run"
    total = 3000
    proc = xinet_train("--env", "HalfCheetah-v4", *SMALL, "--set", "checkpoint_freq=800",
                       "--set", "eval_freq=500", "--total-steps", total, "--out", run, background=True)
    try:
        wait_for_evaluation(run, proc, step=1000)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert [p.name for p in checkpoint_dirs(run)] == ["step_0000000800"]
    read_checkpoint(checkpoint_dirs(run)[0])
    assert [int(r["step"]) for r in eval_rows(run) if r["event"] == "eval"] == [500, 1000]
    resumed = xinet_train("--resume", run, "--no-progress", "--device", "cpu")
    assert resumed.returncode == 0, resumed.stderr[-1500:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["total_steps"] == total
    steps = [int(r["step"]) for r in eval_rows(run) if r["event"] == "eval"]
    assert steps == list(range(500, total + 1, 500))  # no row duplicated, none missing
    XiSAC.load(run / "model.safetensors")
    assert not list((run / "checkpoints").glob(".tmp*"))
    assert [p.name for p in checkpoint_dirs(run)] == ["step_0000002400", "step_0000001600"]  # keep_checkpoints 2


@pytest.mark.slow
def test_sigterm_checkpoints_and_resumes(tmp_path):
    run = tmp_path / "run"
    proc = xinet_train("--env", "HalfCheetah-v4", *SMALL, "--set", "checkpoint_freq=0", "--set", "eval_freq=500",
                       "--total-steps", 2000, "--out", run, background=True)
    wait_for_first_evaluation(run, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-1500:]
    [checkpoint] = checkpoint_dirs(run)  # checkpoint_freq 0: the one the signal asked for
    step = int(checkpoint.name.split("_")[1])
    assert 500 <= step < 2000
    assert err.strip().splitlines()[-1] == (f"xinet-train: stopped by SIGTERM at step {step}; checkpoint saved, "
                                            f"continue with: xinet-train --resume {run}")
    resumed = xinet_train("--resume", run, "--no-progress", "--device", "cpu")
    assert resumed.returncode == 0, resumed.stderr[-1500:]
    assert json.loads((run / "summary.json").read_text())["total_steps"] == 2000


@pytest.mark.slow
def test_sighup_from_a_closed_terminal_checkpoints(tmp_path):
    """Closing the terminal: the run's terminal hangs up, then SIGHUP arrives. A checkpoint is written and the run
    stops with 128 + SIGHUP, its output (the closing message included) going nowhere instead of failing."""
    import pty

    run = tmp_path / "run"
    master, terminal = pty.openpty()
    try:
        proc = xinet_train("--env", "HalfCheetah-v4", *SMALL, "--set", "checkpoint_freq=0", "eval_freq=500",
                           "--total-steps", 3000, "--out", run, background=True, stdin=terminal, stdout=terminal,
                           stderr=terminal)
    finally:
        os.close(terminal)
    try:
        wait_for_first_evaluation(run, proc)
    finally:
        os.close(master)  # the terminal is closed: writing to it now fails with EIO
    proc.send_signal(signal.SIGHUP)
    assert proc.wait(timeout=120) == 128 + signal.SIGHUP
    [checkpoint] = checkpoint_dirs(run)
    read_checkpoint(checkpoint)
    steps = [int(r["step"]) for r in eval_rows(run) if r["event"] == "eval"]
    assert 500 <= steps[-1] <= int(checkpoint.name.split("_")[1]) < 3000
    assert not (run / "summary.json").exists()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("done") / "run"
    proc = xinet_train("--env", "HalfCheetah-v4", *SMALL, "--set", "checkpoint_freq=400", "--set", "eval_freq=400",
                       "--total-steps", 1000, "--out", run)
    assert proc.returncode == 0, proc.stderr[-1500:]
    return run


def _snapshot(run):
    return {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}


def _rewrite_manifest(ckpt):
    import hashlib

    manifest = json.loads((ckpt / "manifest.json").read_text())
    for name, entry in manifest["files"].items():
        data = (ckpt / name).read_bytes()
        entry.update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    (ckpt / "manifest.json").write_text(json.dumps(manifest))


def _damage(kind, ckpt):
    state = ckpt / "state.safetensors"
    if kind == "truncated":
        state.write_bytes(state.read_bytes()[:1000])
    elif kind == "bit-flipped":
        data = bytearray(state.read_bytes())
        data[len(data) // 2] ^= 0x10
        state.write_bytes(bytes(data))
    elif kind == "wrong-schema":
        (ckpt / "meta.json").write_text(json.dumps({"format": "something-else", "step": "x"}))
        _rewrite_manifest(ckpt)
    elif kind == "pickle":
        state.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
        _rewrite_manifest(ckpt)


@pytest.mark.slow
@pytest.mark.parametrize("kind,message", [("truncated", "truncated"), ("bit-flipped", "corrupted"),
                                          ("wrong-schema", "wrong schema"), ("pickle", "unreadable")])
def test_damaged_checkpoints_are_rejected_without_overwriting(finished_run, tmp_path, kind, message):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    for ckpt in checkpoint_dirs(run):
        _damage(kind, ckpt)
    with pytest.raises(CheckpointError, match=message):
        read_checkpoint(checkpoint_dirs(run)[0])
    before = _snapshot(run)
    proc = xinet_train("--resume", run, "--total-steps", 1200, "--no-progress", "--device", "cpu")
    assert proc.returncode == 2, proc.stderr[-1500:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("xinet-train: error:") and "no valid checkpoint" in last and "Traceback" not in proc.stderr
    assert message in proc.stderr  # each skipped checkpoint is named with its reason
    assert _snapshot(run) == before


@pytest.mark.slow
def test_newest_invalid_checkpoint_falls_back_to_the_previous(finished_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    newest, previous = checkpoint_dirs(run)[:2]
    _damage("truncated", newest)
    assert previous.name == "step_0000000400"
    proc = xinet_train("--resume", run, "--total-steps", 1200, "--no-progress", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert f"skipping invalid checkpoint: {newest}" in proc.stderr
    steps = [int(r["step"]) for r in eval_rows(run) if r["event"] == "eval"]
    assert steps == [400, 800, 1200]  # rows after the checkpoint used were written again once, not duplicated


@pytest.mark.slow
@pytest.mark.parametrize("kind,message", [("truncated", "not a valid safetensors"), ("bit-flipped", "checksum"),
                                          ("pickle", "not a valid safetensors"), ("wrong-schema", "metadata")])
def test_damaged_model_files_are_rejected(finished_run, tmp_path, kind, message):
    path = tmp_path / "model.safetensors"
    data = (finished_run / "model.safetensors").read_bytes()
    if kind == "truncated":
        data = data[: len(data) // 2]
    elif kind == "bit-flipped":
        data = bytearray(data)
        data[-100] ^= 0x01
        data = bytes(data)
    elif kind == "pickle":
        data = pickle.dumps({"policy": np.zeros(3)})
    elif kind == "wrong-schema":
        from safetensors.torch import save

        from xinet_rl.io import FORMAT, tensors_digest

        tensors = {"w": torch.zeros(2)}
        data = save(tensors, metadata={"format": FORMAT, "meta": json.dumps({"config": 3}),
                                       "sha256": tensors_digest(tensors)})
    path.write_bytes(data)
    with pytest.raises(ModelFileError, match=message) as info:
        XiSAC.load(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.slow
@pytest.mark.parametrize("env_id,message", [  # they fail in their 750th and 700th step (tests/support)
    ("faulty_envs:NanObs-v0", "non-finite observation from the environment at step 700"),
    ("faulty_envs:Raises-v0", "environment Raises-v0 raised RuntimeError in step(): simulator exploded")])
def test_bad_environment_stops_with_exit_3_and_keeps_the_checkpoint(tmp_path, env_id, message):
    run = tmp_path / "run"
    proc = xinet_train("--env", env_id, *SMALL, "--set", "checkpoint_freq=500", "--set", "eval_freq=10000",
                       "--total-steps", 2000, "--out", run)
    assert proc.returncode == 3, proc.stderr[-1500:]
    assert proc.stderr.strip().splitlines()[-1] == f"xinet-train: error: {message}"
    assert "Traceback" not in proc.stderr
    assert [p.name for p in checkpoint_dirs(run)] == ["step_0000000500"]
    read_checkpoint(checkpoint_dirs(run)[0])


def test_nan_in_a_loss_stops_training_with_a_diagnosis(tmp_path):
    from xinet_rl.callbacks import Checkpoints
    from xinet_rl.envs import make_env
    from xinet_rl.guards import TrainingError

    model = XiSAC(make_env("HalfCheetah-v4", seed=0), seed=0, device="cpu", learning_starts=100,
                  ofenet_pretrain_steps=5, batch_size=32, buffer_size=1000, ofenet_layers=2, ofenet_units=8,
                  actor_widths=[16, 16], critic_widths=[16, 16])
    model.learn(200, callback=Checkpoints(tmp_path, every=150, keep=2))
    with torch.no_grad():
        model.policy.critic2.out.weight[0, 0] = float("nan")
    with pytest.raises(TrainingError, match=r"non-finite critic loss.* at step 20\d"):
        model.learn(50, reset_num_timesteps=False)
    read_checkpoint(checkpoint_dirs(tmp_path)[0])


def test_checkpoint_write_failing_midway_leaves_the_previous_one_valid(tmp_path, monkeypatch):
    from xinet_rl.envs import make_env

    model = XiSAC(make_env("HalfCheetah-v4", seed=0), seed=0, device="cpu", learning_starts=100,
                  ofenet_pretrain_steps=5, batch_size=32, buffer_size=1000, ofenet_layers=2, ofenet_units=8,
                  actor_widths=[16, 16], critic_widths=[16, 16])
    model.learn(150)
    first = model.save_checkpoint(tmp_path, keep=2)
    model.learn(50, reset_num_timesteps=False)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.raises(OSError, match="No space"):
        model.save_checkpoint(tmp_path, keep=2)
    assert checkpoint_dirs(tmp_path) == [first]
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".tmp")]
    read_checkpoint(first)
    # A process killed while writing leaves its temporary directory; the next checkpoint removes it.
    stale = tmp_path / "checkpoints" / ".tmp_step_0000000100_99999"
    stale.mkdir()
    (stale / "state.safetensors").write_bytes(b"half")
    monkeypatch.undo()
    model.save_checkpoint(tmp_path, keep=2)
    assert not stale.exists() and len(checkpoint_dirs(tmp_path)) == 2
