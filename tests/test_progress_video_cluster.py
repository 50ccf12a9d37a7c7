"""The progress bar's phases, evaluations and parameter counts, with the final evaluation and every layer's width in
TensorBoard; the video camera that follows the agent; ``xinet-compare --address`` on a real ``ray start --head``
cluster with token authentication, and clusters that cannot be joined."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import torch

# ----- progress bar and TensorBoard --------------------------------------------------------------------------------
LEARNING_STARTS, PRETRAIN, TOTAL, EVAL_FREQ = 30, 20, 90, 50
SMALL = {"learning_starts": LEARNING_STARTS, "ofenet_pretrain_steps": PRETRAIN, "batch_size": 16, "buffer_size": 500,
         "eval_freq": EVAL_FREQ, "eval_episodes": 1, "ofenet_layers": 2, "ofenet_units": 4,
         "actor_widths": "[16,16]", "critic_widths": "[16,16]", "prune_start": 5, "prune_interval": 5,
         "prune_patience": 1, "prune_strength": 1.0, "gate_lr": 0.05, "gate_update_every": 1, "checkpoint_freq": 0}


@pytest.fixture(scope="module")
def progress_run(tmp_path_factory):
    """One small run of ``train`` with its progress bar: (stderr lines, run directory, summary)."""
    from xinet_rl.callbacks import ProgressBar
    from xinet_rl.run import trainer as train_cli
    from xinet_rl.config import resolve_config

    out = tmp_path_factory.mktemp("progress") / "run"
    text = tempfile.TemporaryFile("w+")
    mp = pytest.MonkeyPatch()
    mp.setattr(train_cli, "ProgressBar", lambda *args, **kwargs: ProgressBar(*args, **kwargs, file=text))
    try:
        config = resolve_config("Pendulum-v1", None, [f"{k}={v}" for k, v in SMALL.items()], TOTAL)
        summary = train_cli.train("Pendulum-v1", config, 0, out, torch.device("cpu"), progress=True)
    finally:
        mp.undo()
    text.seek(0)
    lines = [line.strip() for line in re.split(r"[\r\n]+", text.read()) if line.strip()]
    return lines, out, summary


def test_progress_bar_shows_each_phase_with_its_own_count(progress_run):
    lines, _, _ = progress_run
    phases = []
    for line in lines:
        phase = line.split(":")[0]
        if not phases or phases[-1] != phase:
            phases.append(phase)
    assert phases == ["random actions", "OFENet pre-training", "training"], phases
    assert any(f"{LEARNING_STARTS}/{LEARNING_STARTS} " in line for line in lines if line.startswith("random"))
    pretrain = [line for line in lines if line.startswith("OFENet pre-training")]
    assert f"{PRETRAIN}/{PRETRAIN} " in pretrain[-1] and "update/s" in pretrain[-1]
    # the training bar starts where training starts, so its rate and ETA count training steps only
    training = [line for line in lines if line.startswith("training")]
    assert f" {LEARNING_STARTS + 1}/{TOTAL} " in training[0], training[0]
    assert f" {TOTAL}/{TOTAL} " in training[-1]


def test_progress_bar_shows_final_evaluation_and_current_parameter_counts(progress_run):
    lines, out, summary = progress_run
    last = lines[-1]
    final = json.loads((out / "summary.json").read_text())["final_eval_return_mean"]
    assert f"eval {final:.1f} @{TOTAL}" in last, last
    params = summary["params_final"]
    assert f"params deploy {params['deploy']:,} train {params['train']:,}" in last, last
    # the counts change with the pruning events, which happened here, and only then
    shown = {m.group(0) for line in lines for m in [re.search(r"params deploy [\d,]+ train [\d,]+", line)] if m}
    assert summary["prune_events"] > 0 and len(shown) > 1
    initial = summary["params_initial"]
    assert f"params deploy {initial['deploy']:,} train {initial['train']:,}" in lines[1]  # from the start


def test_tensorboard_has_the_final_evaluation_and_every_width_from_the_start(progress_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, out, summary = progress_run
    acc = EventAccumulator(str(out), size_guidance={"scalars": 0})
    acc.Reload()
    assert [e.step for e in acc.Scalars("eval/mean_reward")] == [EVAL_FREQ, TOTAL]
    assert acc.Scalars("eval/mean_reward")[-1].value == pytest.approx(summary["final_eval_return_mean"])
    for network, widths in summary["widths_initial"].items():
        for i, width in enumerate(widths):
            events = acc.Scalars(f"widths/{network}/{i}")
            assert (events[0].step, events[0].value) == (0, width)
            final = summary["widths_final"][network]
            assert events[-1].value == (final[i] if i < len(final) else 0)


def test_pretrain_hook_is_called_per_update_and_detached_after_learn():
    from xinet_rl.agents.xisac import XiSAC
    from xinet_rl.envs import make_env

    model = XiSAC(make_env("Pendulum-v1", seed=0), seed=0, device="cpu", learning_starts=5, ofenet_pretrain_steps=7,
                  batch_size=8, buffer_size=100, ofenet_layers=1, ofenet_units=4, actor_widths=[8],
                  critic_widths=[8])
    calls = []
    model.pretrain_hook = lambda done, due: calls.append((done, due))
    model.learn(8)
    assert calls == [(i, 7) for i in range(1, 8)]
    assert XiSAC.pretrain_hook is None  # the class default: no bar, no call


# ----- video ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("env_id,camera", [("HalfCheetah-v4", "track"), ("Hopper-v4", "track"),
                                           ("Walker2d-v4", "track"), ("Ant-v4", "track"),
                                           ("InvertedPendulum-v4", None), ("Pendulum-v1", None)])
def test_video_env_uses_the_tracking_camera_where_there_is_one(env_id, camera):
    import mujoco

    from xinet_rl.run.video import tracking_camera
    from xinet_rl.envs import make_env

    kwargs = tracking_camera(env_id)
    assert kwargs == ({"camera_name": camera} if camera else {})
    env = make_env(env_id, seed=0, render_mode="rgb_array", **kwargs)
    renderer = getattr(env.unwrapped, "mujoco_renderer", None)
    if camera:
        assert renderer.camera_id == mujoco.mj_name2id(env.unwrapped.model, mujoco.mjtObj.mjOBJ_CAMERA, camera) >= 0
    elif renderer is not None:
        assert renderer.camera_id == -1  # the default (free) camera
    env.close()


RENDER_FAR_AWAY = """
import json, sys, tempfile
import numpy as np
from xinet_rl.run.video import make_video_env
from xinet_rl.run.errors import UsageError
try:
    env = make_video_env("HalfCheetah-v4", 0, tempfile.mkdtemp(), 1)
except UsageError as exc:
    print(json.dumps({"skip": str(exc)}))
    sys.exit()
env.reset(seed=0)
u = env.unwrapped
counts = []
for x in (0.0, 30.0):  # the cheetah at the start and 30 m ahead
    qpos = u.data.qpos.copy()
    qpos[0] = x
    u.set_state(qpos, 0 * u.data.qvel)
    frame = env.render().astype(int)
    r, g, b = frame[..., 0], frame[..., 1], frame[..., 2]
    counts.append(int(((r > g + 20) & (g > b + 20)).sum()))  # the body's orange-brown pixels
print(json.dumps({"body_pixels": counts, "pixels": frame.shape[0] * frame.shape[1]}))
"""


def test_video_camera_follows_the_agent():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    proc = subprocess.run([sys.executable, "-c", RENDER_FAR_AWAY], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if "skip" in result:
        pytest.skip(f"no OpenGL back-end here: {result['skip']}")
    near, far = result["body_pixels"]
    assert near > 0.005 * result["pixels"]
    assert far > 0.5 * near  # still in the frame, about as large, 30 m further on


# ----- xinet-compare --address on a real cluster -------------------------------------------------------------------
TINY = ["--total-steps", "300", "--set", "learning_starts=100", "--set", "ofenet_pretrain_steps=10",
        "--set", "batch_size=32", "--set", "buffer_size=1000", "--set", "eval_freq=300", "--set", "eval_episodes=1",
        "--set", "ofenet_layers=2", "--set", "ofenet_units=8", "--set", "actor_widths=[32,32]",
        "--set", "critic_widths=[32,32]"]
RAY = Path(sys.executable).with_name("ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def own_processes(marker: str) -> list[int]:
    """The processes whose command line names ``marker`` (the cluster's own temporary directory)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def clean_env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    return {**env, "HOME": str(home), "OMP_NUM_THREADS": "1", "RAY_DEDUP_LOGS": "0"}


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A one-CPU cluster of ``ray start --head`` on the loopback address, with token authentication as Ray >= 2.59
    turns it on (a token in ``~/.ray/auth_token``: here a temporary HOME, not the user's). Stopped afterwards by its
    own processes only (never ``ray stop``, which would stop every Ray on the machine)."""
    if not RAY.is_file():
        pytest.skip("the ray command is not installed next to this Python")
    home = tmp_path_factory.mktemp("home")
    (home / ".ray").mkdir()
    (home / ".ray" / "auth_token").write_text(secrets.token_hex(32))
    temp = tempfile.mkdtemp(prefix="xr", dir="/tmp")  # short: Ray's socket paths must stay under 108 characters
    port = free_port()
    log = Path(temp) / "head.log"
    with log.open("w") as handle:
        head = subprocess.Popen(
            [str(RAY), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port),
             "--num-cpus", "1", "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", temp,
             "--ray-client-server-port", str(free_port()), "--dashboard-port", str(free_port()),
             "--dashboard-agent-listen-port", str(free_port())],
            env=clean_env(home), stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while "Ray runtime started" not in log.read_text():
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ray start --head did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield {"address": f"127.0.0.1:{port}", "home": home, "temp": temp}
    finally:
        head.send_signal(signal.SIGTERM)  # --block: Ray stops the processes it started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
        for pid in own_processes(temp):  # anything of this cluster that outlived it
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        shutil.rmtree(temp, ignore_errors=True)


def compare(*args, env):
    return subprocess.run([sys.executable, "-m", "xinet_rl.cli.compare", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_compare_trains_on_a_cluster_started_with_ray_start(ray_head, tmp_path):
    out = tmp_path / "out"
    proc = compare("--env", "Pendulum-v1", "--variants", "xinet", "--seeds", 1, "--address", ray_head["address"],
                   "--out", out, *TINY, env=clean_env(ray_head["home"]))  # the token is found in ~/.ray/auth_token
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "xinet-compare: xinet seed 0: return" in proc.stdout
    assert (out / "runs" / "xinet_s0" / "summary.json").is_file() and (out / "report.md").is_file()
    # the run was a task of that cluster: its worker logs are in the cluster's directory
    assert list(Path(ray_head["temp"]).glob("session_*/logs/worker-*")), "no worker of the cluster ran"


@pytest.mark.slow
def test_cluster_that_cannot_be_joined_answers_in_one_line(ray_head, tmp_path):
    stranger = tmp_path / "home"  # a machine without the cluster's token
    stranger.mkdir()
    out = tmp_path / "out"
    proc = compare("--env", "Pendulum-v1", "--variants", "xinet", "--seeds", 1, "--address", ray_head["address"],
                   "--out", out, *TINY, env=clean_env(stranger))
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "requires token authentication" in proc.stderr and "ray get-auth-token" in proc.stderr
    assert not out.exists()


def test_check_address_tells_why(ray_head, monkeypatch, tmp_path):
    from xinet_rl.run.errors import UsageError
    from xinet_rl.run.cluster import check_address

    monkeypatch.setenv("HOME", str(ray_head["home"]))
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    assert check_address(ray_head["address"]) is True  # token authentication, with the token found here
    monkeypatch.setenv("RAY_AUTH_TOKEN", "not-the-token")
    with pytest.raises(UsageError, match="rejects the authentication token from RAY_AUTH_TOKEN"):
        check_address(ray_head["address"])
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    token_file = tmp_path / "token"
    token_file.write_text((ray_head["home"] / ".ray" / "auth_token").read_text() + "\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token_file))
    assert check_address(ray_head["address"]) is True
    with pytest.raises(UsageError, match="expected HOST:PORT"):
        check_address("localhost")
    with socketserver.TCPServer(("127.0.0.1", 0), NotRay) as server:  # something that listens but is not Ray
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            with pytest.raises(UsageError, match="does not answer as Ray's GCS"):
                check_address(f"127.0.0.1:{server.server_address[1]}")
        finally:
            server.shutdown()


class NotRay(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
