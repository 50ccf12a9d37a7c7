"""XiSAC used as a stable-baselines3 user uses SAC: an environment straight from ``gym.make`` (float64 observations),
SB3's constructor form, callbacks, ``evaluate_policy``, ``.zip`` paths, ``get_parameters``/``set_parameters``,
vectorized environments and the progress bar; bad keywords get the command line's messages."""

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.callbacks import CheckpointCallback, EvalCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv
from stable_baselines3.sac.policies import MlpPolicy as SACMlpPolicy

from xinet_rl import XiSAC
from xinet_rl.checkpoint import CheckpointError
from xinet_rl.config import AgentConfig, ConfigError, UnknownKeyError, resolve_config

ENV_ID = "HalfCheetah-v4"
EPISODE = 50  # short episodes: evaluations stay cheap
TINY = dict(ofenet_layers=1, ofenet_units=4, actor_widths=[16], critic_widths=[16], learning_starts=100,
            ofenet_pretrain_steps=5, batch_size=32, buffer_size=1000)


def plain_env():
    return gym.make(ENV_ID, max_episode_steps=EPISODE)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """250 steps of SB3's form on a plain ``gym.make`` environment, with SB3's evaluation and checkpoint callbacks
    and its progress bar."""
    root = tmp_path_factory.mktemp("sb3")
    env = plain_env()
    assert env.observation_space.dtype == np.float64  # what the package's own make_env would have cast
    model = XiSAC("MlpPolicy", env, seed=0, device="cpu", **TINY)
    evaluation = EvalCallback(Monitor(plain_env()), eval_freq=100, n_eval_episodes=1,
                              best_model_save_path=str(root / "best"), log_path=str(root / "logs"))
    checkpoints = CheckpointCallback(save_freq=100, save_path=str(root / "checkpoints"))
    model.learn(250, callback=[evaluation, checkpoints], progress_bar=True)
    return model, root


def _same_state(a: XiSAC, b: XiSAC) -> None:
    sa, sb = a.policy.state_dict(), b.policy.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_learn_with_eval_and_checkpoint_callbacks(trained):
    model, root = trained
    assert model.num_timesteps == 250 and model._n_updates == 150 and model.env_id == ENV_ID
    assert model.replay_buffer.observations.dtype == np.float32  # float64 observations stored as float32
    best = root / "best" / "best_model.zip"  # what SB3 users look for after EvalCallback
    assert best.is_file() and not (root / "best" / "best_model").exists()
    assert np.load(root / "logs" / "evaluations.npz")["timesteps"].tolist() == [100, 200]
    for suffix in ("best_model.zip", "best_model"):
        loaded = XiSAC.load(root / "best" / suffix, device="cpu")
        assert loaded.num_timesteps in (100, 200)
    assert sorted(p.name for p in (root / "checkpoints").iterdir()) == ["rl_model_100_steps.zip",
                                                                       "rl_model_200_steps.zip"]
    assert XiSAC.load(root / "checkpoints" / "rl_model_200_steps", device="cpu").num_timesteps == 200
    data = best.read_bytes()  # the name is SB3's; the content stays safetensors with JSON metadata, no pickle
    assert data[:2] != b"PK" and data[8:9] == b"{"


def test_predict_and_evaluate_policy_on_plain_gym_make(trained):
    model, _ = trained
    env = plain_env()
    obs, _ = env.reset(seed=3)
    assert obs.dtype == np.float64
    action, _ = model.predict(obs, deterministic=True)
    assert action.shape == env.action_space.shape and np.all(np.abs(action) <= 1)
    # cast at the policy's input: the float32 observation gives the same action
    np.testing.assert_array_equal(action, model.predict(obs.astype(np.float32), deterministic=True)[0])
    batch = np.stack([obs, obs + 0.1])
    assert model.predict(batch, deterministic=True)[0].shape == (2, 6)
    rewards, lengths = evaluate_policy(model, Monitor(plain_env()), n_eval_episodes=2, return_episode_rewards=True)
    assert lengths == [EPISODE, EPISODE] and np.all(np.isfinite(rewards))


def test_save_load_zip_habits_both_ways(trained, tmp_path):
    model, _ = trained
    model.save(tmp_path / "agent")  # SB3: no suffix -> .zip
    assert (tmp_path / "agent.zip").is_file() and not (tmp_path / "agent").exists()
    for name in ("agent", "agent.zip"):
        _same_state(model, XiSAC.load(tmp_path / name, device="cpu"))
    model.save(str(tmp_path / "other.zip"))  # saved with the suffix, loaded without it
    _same_state(model, XiSAC.load(str(tmp_path / "other"), device="cpu"))
    model.save(tmp_path / "model.safetensors")  # the project's own name is kept
    assert (tmp_path / "model.safetensors").is_file() and not (tmp_path / "model.safetensors.zip").exists()
    with pytest.raises(ValueError, match="not found"):
        XiSAC.load(tmp_path / "missing")
    (tmp_path / "sac.zip").write_bytes(b"PK\x03\x04 a zip archive, as SB3's own save writes")
    with pytest.raises(ValueError, match="a zip archive"):  # named for what it is, never unpickled
        XiSAC.load(tmp_path / "sac")
    # loaded on a plain gym.make environment, training goes on
    resumed = XiSAC.load(tmp_path / "agent", env=plain_env(), device="cpu")
    resumed.learn(20, reset_num_timesteps=False)
    assert resumed.num_timesteps == model.num_timesteps + 20


def test_get_set_parameters_round_trip_with_optimizer_states(trained, tmp_path):
    model, _ = trained
    params = copy.deepcopy(model.get_parameters())
    optimizers = ["policy.ofenet_optimizer", "policy.actor_optimizer", "policy.critic_optimizer",
                  "policy.ent_coef_optimizer", "policy.gate_optimizer"]
    assert sorted(params) == sorted(["policy", *optimizers])
    for name in optimizers:
        assert params[name]["state"] and all("exp_avg" in s for s in params[name]["state"].values()), name

    model.train(3, model.batch_size)  # moves weights and optimizer moments away from the copy
    assert not torch.equal(model.policy.state_dict()["actor.mu.weight"], params["policy"]["actor.mu.weight"])
    model.set_parameters(params)
    now = model.get_parameters()
    for key, value in params["policy"].items():
        assert torch.equal(now["policy"][key], value), key
    for name in optimizers:
        assert now[name]["param_groups"] == params[name]["param_groups"]
        for index, state in params[name]["state"].items():
            for key, value in state.items():
                assert torch.equal(torch.as_tensor(now[name]["state"][index][key]), torch.as_tensor(value)), (name, key)

    fresh = XiSAC("MlpPolicy", plain_env(), seed=1, device="cpu", **TINY)
    fresh.set_parameters(params)
    obs = np.random.default_rng(0).normal(size=(5, 17))
    np.testing.assert_array_equal(fresh.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
    with pytest.raises(ValueError, match="do not match"):  # SB3's exact_match: every object named
        fresh.set_parameters({"policy": params["policy"]})
    fresh.set_parameters({"policy": params["policy"]}, exact_match=False)
    model.save(tmp_path / "weights")  # or from a model file (weights only: the optimizers keep their states)
    fresh.set_parameters(tmp_path / "weights.zip")
    _same_state(model, fresh)


@pytest.mark.parametrize("train_freq, gradient_steps, updates", [(1, 1, 50), (2, 3, 75)])
def test_two_environments_in_a_dummy_vec_env(train_freq, gradient_steps, updates):
    """SB3's semantics: a step of the VecEnv is 2 transitions; every ``train_freq`` such steps, ``gradient_steps``
    updates, once more than ``learning_starts`` transitions were collected (160 - 60 = 100 transitions: 50 steps of
    one update, or 25 rollouts of 2 steps with 3 updates each)."""
    venv = DummyVecEnv([plain_env, plain_env])
    model = XiSAC("MlpPolicy", venv, seed=0, device="cpu", **{**TINY, "learning_starts": 60},
                  train_freq=train_freq, gradient_steps=gradient_steps)
    model.learn(160)
    assert model.num_timesteps == 160 and model._n_updates == updates
    assert model.replay_buffer.pos == 80 and model.replay_buffer.n_envs == 2  # 160 transitions stored
    assert model.env_id == ENV_ID
    obs = venv.reset()
    assert model.predict(obs, deterministic=True)[0].shape == (2, 6)
    with pytest.raises(CheckpointError, match="one environment"):  # exact resume is for one environment only
        model.save_checkpoint("unused", keep=1)


def test_sb3_constructor_form_next_to_the_short_one():
    env = plain_env()
    forms = [XiSAC("MlpPolicy", env, device="cpu", **TINY), XiSAC(policy="MlpPolicy", env=env, device="cpu", **TINY),
             XiSAC(env, device="cpu", **TINY), XiSAC(env, AgentConfig(**TINY), device="cpu"),
             XiSAC(env=env, config=AgentConfig(**TINY), device="cpu"), XiSAC("XiPolicy", env, device="cpu", **TINY)]
    assert all(m.policy.widths == forms[0].policy.widths and m.batch_size == 32 for m in forms)
    assert XiSAC(ENV_ID, device="cpu", **TINY).env_id == ENV_ID  # an id, as SB3 takes it
    for policy in ("CnnPolicy", "MultiInputPolicy", SACMlpPolicy):
        with pytest.raises(ValueError, match="one policy, 'MlpPolicy'"):
            XiSAC(policy, env, **TINY)


BAD = [
    pytest.param({"batch_size": -3}, id="negative-batch-size"),
    pytest.param({"buffer_size": 100, "batch_size": 128}, id="buffer-smaller-than-batch"),
    pytest.param({"gradient_steps": -2}, id="gradient-steps"),
    pytest.param({"prune_eps": 1.0}, id="prune-eps-one"),
    pytest.param({"actor_widths": []}, id="no-actor-layers"),
]


@pytest.mark.parametrize("values", BAD)
def test_bad_keywords_get_the_command_lines_message(values, tmp_path, capsys):
    from xinet_rl.cli.train import main

    pairs = [f"{key}={value}" for key, value in values.items()]
    with pytest.raises(ConfigError) as resolved:
        resolve_config(ENV_ID, overrides=pairs)
    message = str(resolved.value)
    assert any(key in message for key in values)
    with pytest.raises(ConfigError) as constructed:
        XiSAC("MlpPolicy", plain_env(), **values)
    assert isinstance(constructed.value, ValueError) and str(constructed.value) == message
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exited:  # the command line: exit 2, one line, nothing written
        main(["--env", ENV_ID, "--out", str(out), *[a for p in pairs for a in ("--set", p)]])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and not out.exists()


def test_unknown_and_sac_only_keywords():
    env = plain_env()
    with pytest.raises(UnknownKeyError, match="unknown config key 'batchsize'.*did you mean batch_size"):
        XiSAC(env, batchsize=32)
    with pytest.raises(TypeError, match="SAC's keyword argument 'use_sde'"):  # a TypeError, as Python's own
        XiSAC("MlpPolicy", env, use_sde=True)
    with pytest.raises(ConfigError, match="'episode' is not supported"):
        XiSAC("MlpPolicy", env, train_freq=(1, "episode"))
    assert XiSAC("MlpPolicy", env, train_freq=(4, "step"), **TINY).train_freq.frequency == 4
