"""XiSAC as a stable-baselines3 algorithm: update invariants, save/load, evaluate_policy and EvalCallback."""

import numpy as np
import pytest
import torch
from stable_baselines3.common.callbacks import EvalCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

from xinet_rl import XiSAC
from xinet_rl.envs import make_env
from xinet_rl.io import FORMAT, ModelFileError, write_model_file

SMALL = dict(ofenet_layers=2, ofenet_units=8, actor_widths=[32, 32], critic_widths=[32, 32], learning_starts=200,
             ofenet_pretrain_steps=20, batch_size=64, buffer_size=2000, gate_init=0.9)


@pytest.fixture(scope="module")
def trained():
    model = XiSAC(make_env("HalfCheetah-v4", seed=0), seed=0, device="cpu", **SMALL)
    model.learn(300)
    return model


def _ofenet_state(model):
    return {k: v.clone() for k, v in model.policy.ofenet.state_dict().items()}


def test_rl_update_leaves_ofenet_untouched(trained):
    before = _ofenet_state(trained)
    actor_before = [p.clone() for p in trained.policy.actor.parameters()]
    trained.updater.sac_step(64, keep_prob_grads={})
    after = _ofenet_state(trained)
    for key in before:  # weights, π and BN running statistics alike
        assert torch.equal(before[key], after[key]), key
    assert any(not torch.equal(a, b) for a, b in zip(actor_before, trained.policy.actor.parameters()))


def test_aux_update_steps_weights_and_bn_statistics(trained):
    before = _ofenet_state(trained)
    trained.updater.ofenet_step(64, update_gates=False)
    after = _ofenet_state(trained)
    assert not torch.equal(before["state.layers.0.bn.running_mean"], after["state.layers.0.bn.running_mean"])
    assert not torch.equal(before["state.layers.0.linear.weight"], after["state.layers.0.linear.weight"])
    assert torch.equal(before["state.layers.0.gate.keep_prob"], after["state.layers.0.gate.keep_prob"])
    assert not trained.policy.ofenet.training  # back on running statistics


def test_acting_does_not_touch_bn_statistics(trained):
    before = _ofenet_state(trained)
    trained.policy.set_training_mode(True)
    trained.predict(np.zeros((4, 17), dtype=np.float32))
    trained.policy.set_training_mode(False)
    assert all(torch.equal(v, _ofenet_state(trained)[k]) for k, v in before.items())


def test_gate_step_keeps_keep_prob_in_unit_interval_and_moves_it(trained):
    keep_probs = {g: gate.keep_prob.detach().clone() for g, gate in trained.policy.gates().items()}
    grads = {}
    trained.updater.ofenet_step(64, update_gates=False, keep_prob_grads=grads)
    trained.updater.sac_step(64, keep_prob_grads=grads)
    assert set(grads) == set(keep_probs)
    trained.updater.apply_gate_step(grads)
    for g, gate in trained.policy.gates().items():
        assert gate.keep_prob.min() >= 0 and gate.keep_prob.max() <= 1
        assert not torch.equal(gate.keep_prob.detach(), keep_probs[g]), g


def test_save_load_round_trip_predicts_identically(trained, tmp_path):
    path = tmp_path / "model.safetensors"
    trained.save(path)
    loaded = XiSAC.load(path, device="cpu")
    obs = np.random.default_rng(0).normal(size=(16, 17)).astype(np.float32)
    np.testing.assert_array_equal(trained.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    for key, value in trained.policy.state_dict().items():
        assert torch.equal(value, loaded.policy.state_dict()[key]), key
    assert loaded.policy.widths == trained.policy.widths
    assert loaded.num_timesteps == trained.num_timesteps
    # Loading is a classmethod that returns the model; the file is plain safetensors, no pickle, no zip.
    check_safetensors_file(path, trained.policy.state_dict())


def check_safetensors_file(path, state_dict):
    """The safetensors layout: an 8-byte little-endian header length N, N bytes of a JSON header (one entry per
    tensor with dtype, shape and data offsets, and ``__metadata__``), then exactly the tensors' bytes. Not a zip
    (``torch.save``, SB3's ``save``) nor a pickle (protocol byte ``\\x80``); safetensors itself reads the tensors."""
    import json
    import struct

    from safetensors import safe_open
    from safetensors.torch import load_file

    data = path.read_bytes()
    assert not data.startswith(b"PK\x03\x04") and not data.startswith(b"\x80")
    (header_len,) = struct.unpack("<Q", data[:8])
    assert 8 + header_len <= len(data)
    header = json.loads(data[8:8 + header_len])  # the JSON header, nothing else in those bytes
    metadata = header.pop("__metadata__")
    assert isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
    ends = sorted(entry["data_offsets"] for entry in header.values())
    assert ends[0][0] == 0 and all(a[1] == b[0] for a, b in zip(ends, ends[1:]))  # contiguous
    assert 8 + header_len + ends[-1][1] == len(data)  # the tensors end the file
    tensors = load_file(str(path))
    assert tensors.keys() == header.keys()
    with safe_open(str(path), framework="pt") as handle:
        assert handle.metadata() == metadata and set(handle.keys()) == set(header)
    for name, tensor in tensors.items():
        assert list(tensor.shape) == header[name]["shape"], name
    assert tensors.keys() == state_dict.keys()  # the policy's state, every tensor under its own name
    for key, value in state_dict.items():
        assert torch.equal(tensors[key], value.cpu()), key
    assert metadata["format"] == FORMAT and json.loads(metadata["meta"])["algorithm"] == "XiSAC"


def test_model_file_with_the_former_gate_names_loads_as_the_same_model(trained, tmp_path):
    """Files written before the rename call the keep probabilities ``pi`` and the gate keys ``pi_lr``, ``pi_init`` and
    ``pi_update_every``: they load as the model they hold."""
    former = {"gate_lr": "pi_lr", "gate_init": "pi_init", "gate_update_every": "pi_update_every"}
    state = {(k[:-len("keep_prob")] + "pi" if k.endswith(".keep_prob") else k): v
             for k, v in trained.policy.state_dict().items()}
    meta = trained.metadata()
    meta["config"] = {former.get(k, k): v for k, v in meta["config"].items()}
    gates = trained.policy.gates()
    target_copies = sum(g.startswith("critic") for g in gates)
    assert sum(k.endswith(".pi") for k in state) == len(gates) + target_copies and "pi_lr" in meta["config"]
    write_model_file(tmp_path / "former.safetensors", state, meta)
    loaded = XiSAC.load(tmp_path / "former.safetensors", device="cpu")
    assert loaded.config == trained.config
    assert loaded.policy.state_dict().keys() == trained.policy.state_dict().keys()
    for key, value in trained.policy.state_dict().items():
        assert torch.equal(value, loaded.policy.state_dict()[key]), key


def test_loaded_model_continues_training(trained, tmp_path):
    path = tmp_path / "model.safetensors"
    trained.save(path)
    loaded = XiSAC.load(path, env=make_env("HalfCheetah-v4", seed=1), device="cpu")
    loaded.learn(250, reset_num_timesteps=False)
    assert loaded.num_timesteps == trained.num_timesteps + 250


def test_foreign_and_truncated_files_are_rejected(tmp_path):
    foreign = tmp_path / "foreign.safetensors"
    foreign.write_bytes(b"\x80\x04\x95not a model")  # a pickle header
    with pytest.raises(ModelFileError, match="not a valid safetensors"):
        XiSAC.load(foreign)
    with pytest.raises(ModelFileError, match="not found"):
        XiSAC.load(tmp_path / "missing.safetensors")


def test_evaluate_policy_and_eval_callback(trained, tmp_path):
    env = Monitor(make_env("HalfCheetah-v4", seed=5))
    rewards, lengths = evaluate_policy(trained, env, n_eval_episodes=1, return_episode_rewards=True)
    assert len(rewards) == 1 and lengths == [1000] and np.isfinite(rewards[0])
    callback = EvalCallback(Monitor(make_env("HalfCheetah-v4", seed=6)), n_eval_episodes=1, eval_freq=100,
                            log_path=str(tmp_path), verbose=0)
    trained.learn(100, callback=callback, reset_num_timesteps=False)
    assert callback.n_calls == 100 and len(callback.evaluations_results) == 1
    assert (tmp_path / "evaluations.npz").exists()


def test_ungated_variant_has_no_gates():
    model = XiSAC(make_env("HalfCheetah-v4", seed=0), seed=0, device="cpu", gated=False, **SMALL)
    assert model.policy.gates() == {} and model.policy.gate_optimizer is None
    assert not any(name.endswith(".keep_prob") for name, _ in model.policy.named_parameters())
    model.learn(250)
    assert model.num_timesteps == 250


def test_gate_step_every_k_updates_moves_keep_prob_only_on_those_updates():
    """``gate_update_every=3``: π moves on updates 0, 3, 6, ... only; the weights move on every update (their gradient
    goes through the sampled masks, which then record no gradient of their own)."""
    model = XiSAC(make_env("HalfCheetah-v4", seed=0), seed=0, device="cpu", **{**SMALL, "gate_update_every": 3})
    model.learn(SMALL["learning_starts"])  # random steps, OFENet pre-training
    for _ in range(6):
        keep_probs = torch.cat([g.keep_prob.detach().clone() for g in model.policy.gates().values()])
        actor_weight = model.policy.actor.mu.weight.detach().clone()
        gate_update = model._n_updates % 3 == 0
        model.train(1, SMALL["batch_size"])
        moved = not torch.equal(torch.cat([g.keep_prob.detach() for g in model.policy.gates().values()]), keep_probs)
        assert moved == gate_update
        assert not torch.equal(model.policy.actor.mu.weight.detach(), actor_weight)


@pytest.mark.parametrize("gated", [True, False])
def test_width_scale_builds_the_model_of_the_scaled_widths(gated):
    """``width_scale`` 0.25 on OFENet 6 units x 2 layers, actor [32, 7], critics [30, 2] is the model configured with
    2 units, actor [8, 2] and critics [8, 1] (rounded half up, at least 1): same tensors, same shapes."""
    env = make_env("HalfCheetah-v4", seed=0)
    scaled = XiSAC(env, seed=0, device="cpu", gated=gated, ofenet_layers=2, ofenet_units=6, actor_widths=[32, 7],
                   critic_widths=[30, 2], width_scale=0.25)
    direct = XiSAC(env, seed=0, device="cpu", gated=gated, ofenet_layers=2, ofenet_units=2, actor_widths=[8, 2],
                   critic_widths=[8, 1])
    assert scaled.policy.widths == direct.policy.widths
    assert scaled.policy.widths.actor == [8, 2] and scaled.policy.widths.critic2 == [8, 1]
    shapes = {k: v.shape for k, v in scaled.policy.state_dict().items()}
    assert shapes == {k: v.shape for k, v in direct.policy.state_dict().items()}
    assert scaled.policy.param_counts() == direct.policy.param_counts()


def test_model_of_a_float32_env_runs_on_a_plain_gym_make_env(trained, tmp_path):
    """A model trained on ``make_env`` (float32 observations) loads onto, predicts on and trains on the environment
    as ``gym.make`` gives it (float64 observations), the observations cast at the policy's input."""
    import gymnasium as gym

    path = tmp_path / "model.safetensors"
    trained.save(path)
    env = gym.make("HalfCheetah-v4", max_episode_steps=50)
    loaded = XiSAC.load(path, env=env, device="cpu")
    assert loaded.observation_space.dtype == np.float64
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0],
                                  trained.predict(obs.astype(np.float32), deterministic=True)[0])
    loaded.learn(20, reset_num_timesteps=False)
    assert loaded.num_timesteps == trained.num_timesteps + 20
