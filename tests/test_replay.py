"""``TensorReplayBuffer`` returns exactly stable-baselines3's batches (same storage, same random numbers)."""

import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer

from xinet_rl.replay import TensorReplayBuffer


@pytest.mark.parametrize("mirrored", [False, True])
@pytest.mark.parametrize("optimize_memory_usage", [False, True])
@pytest.mark.parametrize("n_envs", [1, 3])
def test_same_batches_as_sb3(optimize_memory_usage, n_envs, mirrored):
    """Also with the accelerator's layout (``mirrored``: separate copies kept current transition by transition),
    exercised on the CPU, where CI runs."""
    obs_space = spaces.Box(-1, 1, (5,), np.float32)
    act_space = spaces.Box(-1, 1, (2,), np.float32)
    kwargs = dict(n_envs=n_envs, optimize_memory_usage=optimize_memory_usage,
                  handle_timeout_termination=not optimize_memory_usage)
    ours = TensorReplayBuffer(50, obs_space, act_space, **kwargs)
    theirs = ReplayBuffer(50, obs_space, act_space, **kwargs)
    ours.mirrored = mirrored
    rng = np.random.default_rng(0)
    for step in range(80):  # wraps around: the buffer is full
        obs, next_obs = rng.normal(size=(2, n_envs, 5)).astype(np.float32)
        action = rng.uniform(-1, 1, (n_envs, 2)).astype(np.float32)
        reward, done = rng.normal(size=n_envs).astype(np.float32), rng.uniform(size=n_envs) < 0.1
        infos = [{"TimeLimit.truncated": bool(rng.uniform() < 0.5)} for _ in range(n_envs)]
        for buffer in (ours, theirs):
            buffer.add(obs, next_obs, action, reward, done, infos)
        if step in (10, 60, 79):
            np.random.seed(step)
            a = ours.sample(32)
            np.random.seed(step)
            b = theirs.sample(32)
            for x, y in zip(a, b):
                if y is None:  # optional fields (n-step discounts)
                    assert x is None
                    continue
                assert x.shape == y.shape and x.dtype == y.dtype
                assert torch.equal(x, y)


def test_checkpoint_round_trip_without_stored_next_observations(tmp_path):
    """``optimize_memory_usage`` (half the replay memory): training runs and a checkpoint restores the buffer."""
    from xinet_rl import XiSAC
    from xinet_rl.envs import make_env

    small = dict(ofenet_layers=2, ofenet_units=4, actor_widths=[16], critic_widths=[16], learning_starts=100,
                 ofenet_pretrain_steps=5, batch_size=16, buffer_size=300, optimize_memory_usage=True)
    model = XiSAC(make_env("HalfCheetah-v4", seed=0), seed=0, device="cpu", **small)
    model.learn(150)
    assert getattr(model.replay_buffer, "next_observations", None) is None
    path = model.save_checkpoint(tmp_path, keep=1)
    restored, _ = XiSAC.from_checkpoint(path, make_env("HalfCheetah-v4", seed=0), device="cpu")
    assert np.array_equal(restored.replay_buffer.observations, model.replay_buffer.observations)
    assert restored.replay_buffer.pos == model.replay_buffer.pos
    restored.learn(20, reset_num_timesteps=False)


def test_replay_file_reads_fields_into_the_buffer_storage(tmp_path):
    """Resume reads each replay field straight into the buffer's arrays (no second copy of the buffer), and refuses
    a field whose dtype or row shape does not match."""
    from xinet_rl.checkpoint import ReplayFile

    obs = np.random.default_rng(0).normal(size=(70, 1, 5)).astype(np.float32)
    np.savez(tmp_path / "replay.npz", observations=obs, rewards=np.ones((70, 1), np.float64))
    replay = ReplayFile(tmp_path / "replay.npz")
    assert sorted(replay.files) == ["observations", "rewards"]
    storage = np.zeros((100, 1, 5), np.float32)
    assert replay.read_into("observations", storage) == 70
    assert np.array_equal(storage[:70], obs) and not storage[70:].any()
    with pytest.raises(ValueError, match="rewards"):
        replay.read_into("rewards", np.zeros((100, 1), np.float32))
    with pytest.raises(ValueError, match="observations"):
        replay.read_into("observations", np.zeros((50, 1, 5), np.float32))


@pytest.mark.parametrize("optimize_memory_usage", [False, True])
def test_drawn_rows_gather_sb3s_batch(optimize_memory_usage):
    """``draw_rows`` then ``gather`` (the CUDA graph's way, rows copied in before each replay) is ``sample``."""
    obs_space = spaces.Box(-1, 1, (4,), np.float32)
    act_space = spaces.Box(-1, 1, (2,), np.float32)
    kwargs = dict(n_envs=2, optimize_memory_usage=optimize_memory_usage,
                  handle_timeout_termination=not optimize_memory_usage)
    ours, theirs = TensorReplayBuffer(30, obs_space, act_space, **kwargs), ReplayBuffer(30, obs_space, act_space, **kwargs)
    rng = np.random.default_rng(1)
    for step in range(45):
        obs, next_obs = rng.normal(size=(2, 2, 4)).astype(np.float32)
        action = rng.uniform(-1, 1, (2, 2)).astype(np.float32)
        reward, done = rng.normal(size=2).astype(np.float32), rng.uniform(size=2) < 0.2
        infos = [{"TimeLimit.truncated": bool(rng.uniform() < 0.5)} for _ in range(2)]
        for buffer in (ours, theirs):
            buffer.add(obs, next_obs, action, reward, done, infos)
        if step in (5, 44):
            np.random.seed(step)
            a = ours.gather(torch.from_numpy(ours.draw_rows(16)))
            np.random.seed(step)
            b = theirs.sample(16)
            for x, y in zip(a, b):
                if y is not None:
                    assert torch.equal(x, y)
