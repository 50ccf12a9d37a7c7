"""The pruner: outputs and optimizer steps are unchanged by removing units whose π is 0, in every network."""

import copy

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F

from xinet_rl import XiSAC
from xinet_rl.cost import expected_params
from xinet_rl.envs import make_env
from xinet_rl.config import AgentConfig
from xinet_rl.policy import XiPolicy
from xinet_rl.pruning import prune, units_to_keep, update_counters
from xinet_rl.structure import Widths

from support.counts import count_groups, count_widths

OBS = gym.spaces.Box(-np.inf, np.inf, (17,), np.float32)
ACT = gym.spaces.Box(-1.0, 1.0, (6,), np.float32)
WIDTHS = Widths(17, 6, 17, [6, 5, 4], [5, 4], [16, 12], [16, 12], [16, 12])


def make_policy(seed=0) -> XiPolicy:
    torch.manual_seed(seed)
    policy = XiPolicy(OBS, ACT, lambda _: 1e-3, widths=WIDTHS.to_dict())
    with policy.ofenet.aux_mode():  # non-trivial BN running statistics
        for _ in range(5):
            policy.ofenet(torch.randn(64, 17) * 2 + 1, torch.rand(64, 6) * 2 - 1)
    with torch.no_grad():  # some interior gates, and target critics that differ from the online ones
        for gate in policy.gates().values():
            gate.keep_prob.uniform_(0.3, 1.0)
        for target in (policy.critic1_target, policy.critic2_target):
            for p in target.parameters():
                p.add_(0.01 * torch.randn_like(p))
    return policy


def switch_off(policy: XiPolicy, seed=1) -> dict[str, torch.Tensor]:
    """Set π = 0 for a random third of the units, all units of state.1, and all but one unit of actor.1."""
    rng = torch.Generator().manual_seed(seed)
    keep = {}
    with torch.no_grad():
        for group, gate in policy.gates().items():
            mask = torch.rand(gate.units, generator=rng) > 0.33
            if group == "state.1":
                mask[:] = False
            if group == "actor.1":
                mask[:] = False
                mask[3] = True
            gate.keep_prob.mul_(mask.float())
            keep[group] = mask
    for name in ("critic1", "critic2"):  # targets carry the same gate pattern as their online critic
        for i, gate in enumerate(getattr(policy, f"{name}_target").trunk.gates):
            with torch.no_grad():
                gate.keep_prob.mul_(keep[f"{name}.{i}"].float())
    return keep


def outputs(policy: XiPolicy, obs, act):
    with torch.no_grad():
        z_s, z_sa, pred = policy.ofenet(obs, act)
        mu, log_std = policy.actor.distribution(z_s)
        return {"pred": pred, "mu": mu, "log_std": log_std, "action": policy.actor.deterministic(z_s),
                "q1": policy.critic1(z_sa), "q2": policy.critic2(z_sa), "q1_target": policy.critic1_target(z_sa),
                "q2_target": policy.critic2_target(z_sa), "z_s_live": z_s[:, z_s.abs().sum(0) > 0],
                "z_sa_live": z_sa[:, z_sa.abs().sum(0) > 0]}


def test_mean_mode_outputs_identical_after_pruning():
    policy = make_policy()
    keep = switch_off(policy)
    obs, act = torch.randn(128, 17), torch.rand(128, 6) * 2 - 1
    before = outputs(policy, obs, act)
    removed = prune(policy, keep)
    after = outputs(policy, obs, act)
    assert removed["state.1"] == 5 and removed["actor.1"] == 11
    for key in before:
        assert before[key].shape == after[key].shape, key
        assert torch.allclose(before[key], after[key], atol=1e-6, rtol=0), key
    # The empty DenseNet layer is gone; the widths describe the live modules.
    assert len(policy.ofenet.state.layers) == 2 and policy.widths.actor[1] == 1
    assert policy.widths.state == [int(keep["state.0"].sum()), int(keep["state.2"].sum())]
    assert policy.ofenet.state.layers[1].linear.in_features == 17 + policy.widths.state[0]


def test_parameter_counts_equal_live_modules_and_cost_model():
    """After pruning, ``param_counts`` and the cost model both equal the count of the architecture of the kept units,
    derived from first principles (``tests/support/counts.py``: a vanished DenseNet layer has width 0), and the
    parameters of a fresh dense model built at the pruned widths."""
    policy = make_policy()
    keep = switch_off(policy)
    structure_before = policy.structure()
    expected = expected_params(structure_before, {g: m.float().sum() for g, m in keep.items()})
    prune(policy, keep)
    derived = count_groups(WIDTHS, {g: int(m.sum()) for g, m in keep.items()})
    assert keep["state.1"].sum() == 0 and len(policy.ofenet.state.layers) == len(WIDTHS.state) - 1
    assert policy.param_counts() == {"train": derived["train"], "deploy": derived["deploy"]}
    assert int(expected) == derived["train"] and float(expected) == int(expected)
    fresh = XiPolicy(OBS, ACT, lambda _: 1e-3, widths=policy.widths.to_dict(), config=AgentConfig(gated=False))
    assert sum(p.numel() for m in (fresh.ofenet, fresh.actor, fresh.critic1, fresh.critic2)
               for p in m.parameters()) == derived["train"]
    assert sum(p.numel() for m in (fresh.ofenet.state, fresh.actor) for p in m.parameters()) == derived["deploy"]
    assert float(expected_params(policy.structure(), {})) == derived["train"]
    assert float(expected_params(policy.structure(), {}, deploy_only=True)) == derived["deploy"]


def _adam_steps(policy, batches):
    """Deterministic (mean-mode) losses of each network, each followed by its optimizer's step."""
    for obs, act, next_obs, y in batches:
        with policy.ofenet.aux_mode():
            aux = F.mse_loss(policy.ofenet(obs, act)[2], next_obs)
        _step(policy.ofenet_optimizer, aux)
        z_s = policy.ofenet.z_s(obs).detach()
        z_sa = policy.ofenet.z_sa(z_s, act).detach()
        _step(policy.critic_optimizer, 0.5 * (F.mse_loss(policy.critic1(z_sa), y) + F.mse_loss(policy.critic2(z_sa), y)))
        _step(policy.actor_optimizer, -policy.critic1(policy.ofenet.z_sa(z_s, policy.actor.deterministic(z_s))).mean())


def _step(optimizer, loss):
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def test_adam_step_after_pruning_is_the_surviving_slice():
    torch.manual_seed(5)
    batches = [(torch.randn(64, 17), torch.rand(64, 6) * 2 - 1, torch.randn(64, 17), torch.randn(64))
               for _ in range(4)]
    policy = make_policy()
    keep = switch_off(policy)
    _adam_steps(policy, batches[:3])  # Adam moments and step counts that are not trivial
    pruned = copy.deepcopy(policy)
    prune(pruned, keep)
    for name in ("ofenet_optimizer", "critic_optimizer", "actor_optimizer"):
        live = {id(p) for g in getattr(pruned, name).param_groups for p in g["params"]}
        assert {id(p) for p in getattr(pruned, name).state} <= live  # state follows the new tensors
        assert len(getattr(pruned, name).state) == len(getattr(policy, name).state) - (name == "ofenet_optimizer") * 3  # state.1: W, BN γ, β
        for state in getattr(pruned, name).state.values():
            assert int(state["step"]) == 3
    _adam_steps(policy, batches[3:])
    _adam_steps(pruned, batches[3:])
    # Surviving parameters took the same step: slice one layer by hand ...
    ones = torch.ones
    z_sa_cols = torch.cat([ones(17, dtype=torch.bool), keep["state.0"], keep["state.1"], keep["state.2"],
                           ones(6, dtype=torch.bool), keep["state_action.0"], keep["state_action.1"]])
    rows, cols = keep["critic1.0"].nonzero().squeeze(1), z_sa_cols.nonzero().squeeze(1)
    assert torch.allclose(pruned.critic1.trunk.linears[0].weight,
                          policy.critic1.trunk.linears[0].weight[rows][:, cols], atol=1e-6)
    cols = torch.cat([torch.ones(17, dtype=torch.bool), keep["state.0"], keep["state.1"]]).nonzero().squeeze(1)
    rows = keep["state.2"].nonzero().squeeze(1)
    assert torch.allclose(pruned.ofenet.state.layers[1].linear.weight,
                          policy.ofenet.state.layers[2].linear.weight[rows][:, cols], atol=1e-6)
    # ... and every network still computes the same function.
    obs, act = torch.randn(64, 17), torch.rand(64, 6) * 2 - 1
    before, after = outputs(policy, obs, act), outputs(pruned, obs, act)
    for key in before:
        assert torch.allclose(before[key], after[key], atol=1e-5, rtol=0), key


def test_polyak_pairs_follow_the_pruned_tensors():
    """The cached (target, online) lists of the Polyak update are the live tensors after a pruning event."""
    policy = make_policy()
    keep = switch_off(policy)
    policy.polyak_pairs()  # cached before the pruning
    prune(policy, keep)
    targets, online = policy.polyak_pairs()
    assert [id(p) for p in targets] == [id(p) for m in (policy.critic1_target, policy.critic2_target)
                                        for p in m.parameters()]
    assert [id(p) for p in online] == [id(p) for m in (policy.critic1, policy.critic2) for p in m.parameters()]
    assert all(t.shape == o.shape for t, o in zip(targets, online))


def test_counters_patience_and_min_units():
    policy = make_policy()
    gates = policy.gates()
    with torch.no_grad():
        gates["critic2.1"].keep_prob.zero_()  # every unit due: min_units survive
        gates["state.0"].keep_prob.zero_()  # a DenseNet layer may vanish
        gates["actor.0"].keep_prob[:4] = 0.0
    for check in range(3):
        update_counters(gates, eps=0.0)
        keep = units_to_keep(gates, patience=3, min_units=2)
        if check < 2:
            assert all(bool(m.all()) for m in keep.values())
    assert int(keep["critic2.1"].sum()) == 2 and int(keep["state.0"].sum()) == 0
    assert int((~keep["actor.0"]).sum()) == 4
    # A unit that rises above eps starts counting again.
    with torch.no_grad():
        gates["actor.0"].keep_prob[0] = 0.5
    update_counters(gates, eps=0.0)
    assert int(gates["actor.0"].zero_checks[0]) == 0 and int(gates["actor.0"].zero_checks[1]) == 4


SMALL = dict(ofenet_layers=3, ofenet_units=6, actor_widths=[16, 16], critic_widths=[16, 16], learning_starts=150,
             ofenet_pretrain_steps=10, batch_size=32, buffer_size=2000)


def test_pruned_model_saves_loads_and_keeps_training(tmp_path):
    model = XiSAC(make_env("HalfCheetah-v4", seed=0), seed=0, device="cpu", **SMALL)
    model.learn(200)
    keep = switch_off_model(model)
    prune(model.policy, keep)
    model.learn(50, reset_num_timesteps=False)
    path = tmp_path / "pruned.safetensors"
    model.save(path)
    loaded = XiSAC.load(path, env=make_env("HalfCheetah-v4", seed=1), device="cpu")
    assert loaded.policy.widths == model.policy.widths
    obs = np.random.default_rng(0).normal(size=(8, 17)).astype(np.float32)
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    loaded.learn(100, reset_num_timesteps=False)
    assert loaded.num_timesteps == 350 and loaded.policy.widths == model.policy.widths


def switch_off_model(model):
    keep = {}
    with torch.no_grad():
        for i, (group, gate) in enumerate(model.policy.gates().items()):
            mask = torch.ones(gate.units, dtype=torch.bool)
            mask[i % gate.units] = False
            gate.keep_prob.mul_(mask.float())
            keep[group] = mask
    return keep


def test_agent_prunes_on_schedule():
    """One update per step after ``learning_starts`` (150): update ``n`` comes at step ``150 + n``. Checks run at
    updates 20, 30, 40, 50; five units of actor.0 are at 0 from update 10 on, so they are counted at checks 20 and 30
    and removed at 30 (patience 2), at step 180. With the gates frozen above 0 everywhere else, that is the only
    event: it records the final model."""
    model = XiSAC(make_env("HalfCheetah-v4", seed=0), seed=0, device="cpu", prune_start=20, prune_interval=10,
                  prune_patience=2, **SMALL)
    model.learn(160)
    assert model._n_updates == 10
    with torch.no_grad():
        model.policy.gates()["actor.0"].keep_prob[:5] = 0.0
        model.policy.gates()["actor.0"].keep_prob[5:] = 1.0
    assert all(float(g.keep_prob.detach().min()) > 0 for name, g in model.policy.gates().items() if name != "actor.0")
    model.config.gate_lr = 0.0
    for group in model.policy.gate_optimizer.param_groups:
        group["lr"] = 0.0
    model.learn(40, reset_num_timesteps=False)
    assert model._n_updates == 50
    assert model.policy.widths.actor == [11, 16]
    [event] = model.prune_events
    assert event["step"] == 180 and event["n_updates"] == 30 and event["removed"] == {"actor.0": 5}
    derived = count_widths(Widths(17, 6, 17, [6] * 3, [6] * 3, [11, 16], [16, 16], [16, 16]))
    assert event["params"] == model.policy.param_counts() == {"train": derived["train"], "deploy": derived["deploy"]}
    assert event["flops"] == model.flops() and event["flops"]["update"] > 0
    assert event["widths"] == model.policy.widths.networks() == {
        "ofenet_state": [6] * 3, "ofenet_state_action": [6] * 3, "actor": [11, 16], "critic1": [16, 16],
        "critic2": [16, 16]}


def test_pruning_bumps_the_structure_version_and_derived_caches_follow():
    """A pruned model announces its new structure by a version number; the cost map and the agent's FLOP count,
    cached per version, are those of the new widths."""
    policy = make_policy()
    first = policy.structure()
    assert policy.structure_version == first.version == 0
    keep_probs = {g: gate.keep_prob.detach() for g, gate in policy.gates().items()}
    before = policy.regularizer.unit_costs(first, keep_probs)
    keep = switch_off(policy)
    prune(policy, keep)
    second = policy.structure()
    assert policy.structure_version == second.version == 1 and second is not first
    assert policy.structure() is second  # cached until the next pruning
    keep_probs = {g: gate.keep_prob.detach() for g, gate in policy.gates().items()}
    after = policy.regularizer.unit_costs(second, keep_probs)
    fresh = copy.deepcopy(policy.regularizer)
    fresh.__dict__.pop("_map_cache", None)
    expected = fresh.unit_costs(second, keep_probs)
    assert set(after) == set(expected) and all(torch.equal(after[g], expected[g]) for g in after)
    assert any(not torch.equal(after[g], before[g]) for g in after if g in before)


def test_networks_are_built_from_the_structure_and_stay_paired_with_it():
    """Every layer's modules have the shape the structure gives it (input width: the groups it reads), before and
    after pruning; a critic's layer is paired with its target copy; widths changed without surgery are refused."""
    from dataclasses import replace

    import pytest

    policy = make_policy()
    for pruned in (False, True):
        if pruned:
            prune(policy, switch_off(policy))
        structure = policy.structure()
        for layer in structure.layers:
            modules = policy.layer_modules(layer.name)
            copies = 2 if layer.name.startswith("critic") else 1
            assert len(modules.linears) == copies, layer.name
            for linear in modules.linears:
                assert tuple(linear.weight.shape) == (layer.out_dim, structure.in_dim(layer.name)), layer.name
            if layer.out is not None:
                assert modules.gate is policy.gates()[layer.out]
                assert all(m.weight.shape[0] == layer.out_dim if hasattr(m, "weight") else m.units == layer.out_dim
                           for m in modules.unit_modules)
    # the emptied DenseNet layer is gone and the names follow: state.2 is now state.1
    assert len(policy.widths.state) == len(WIDTHS.state) - 1 and "state.2" not in policy.structure().groups
    policy.widths = replace(policy.widths, actor=[w + 1 for w in policy.widths.actor])
    with pytest.raises(RuntimeError, match="layer actor.0: the module is"):
        policy.layer_modules("actor.0")
