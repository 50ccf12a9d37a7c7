"""The cost model against parameter counts of the kept architecture, derived from first principles
(tests/support/counts.py)."""

import random
import tempfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from xinet_rl.cost import CostRegularizer, expected_params
from xinet_rl.config import AgentConfig
from xinet_rl.policy import XiPolicy
from xinet_rl.structure import Widths, build_structure

from support.counts import config_widths, count_groups, count_widths

OBS = gym.spaces.Box(-np.inf, np.inf, (17,), np.float32)
ACT = gym.spaces.Box(-1.0, 1.0, (6,), np.float32)
# the unpruned HalfCheetah model as the shipped config (configs/HalfCheetah.yaml over the defaults) lays it out
HALF_CHEETAH = Widths(**config_widths("HalfCheetah-v4", OBS.shape[0], ACT.shape[0]))


def build(widths: Widths) -> XiPolicy:
    return XiPolicy(OBS, ACT, lambda _: 3e-4, widths=widths.to_dict())


def kept_counts(base: Widths, masks: dict[str, np.ndarray]) -> dict[str, int]:
    """Parameters of the architecture left when the units with a 0 gate are removed, from first principles
    (``tests/support/counts.py``; an emptied DenseNet layer counts nothing)."""
    return count_groups(base, {g: int(m.sum()) for g, m in masks.items()})


def random_masks(base: Widths, rng: np.random.Generator, keep: float) -> dict[str, np.ndarray]:
    structure = build_structure(base)
    masks = {}
    for g in structure.gated_groups:
        m = (rng.random(structure.groups[g]) < keep).astype(np.float64)
        if not g.startswith("state") and m.sum() == 0:
            m[0] = 1.0  # an MLP hidden layer keeps at least one unit
        if g == "state.2":
            m[:] = 0.0  # one DenseNet layer removed entirely
        masks[g] = m
    return masks


def test_unpruned_counts_match_the_ofenet_paper_sizes():
    policy = build(HALF_CHEETAH)
    counts = policy.param_counts()
    derived = count_widths(HALF_CHEETAH)
    assert counts == {"train": derived["train"], "deploy": derived["deploy"]}
    fresh = XiPolicy(OBS, ACT, lambda _: 3e-4, widths=HALF_CHEETAH.to_dict(),
                     config=AgentConfig(gated=False))  # no gates to leave out
    assert sum(p.numel() for m in (fresh.ofenet, fresh.actor, fresh.critic1, fresh.critic2)
               for p in m.parameters()) == derived["train"]
    # The config is the OFENet paper's: OFENet 119,040 parameters (REFERENCE.md) less one redundant pre-BN bias per
    # DenseNet unit (docs/method.md: 118,560)
    assert HALF_CHEETAH.state == HALF_CHEETAH.state_action == [30] * 8
    assert derived["ofenet"] == 119_040 - sum(HALF_CHEETAH.state + HALF_CHEETAH.state_action) == 118_560
    assert expected_params(policy.structure(), {}) == counts["train"]
    assert expected_params(policy.structure(), {}, deploy_only=True) == counts["deploy"]


@pytest.mark.parametrize("seed,keep", [(0, 0.5), (1, 0.2), (2, 0.9)])
def test_expected_params_equal_explicit_count_for_random_binary_gates(seed, keep):
    rng = np.random.default_rng(seed)
    masks = random_masks(HALF_CHEETAH, rng, keep)
    structure = build_structure(HALF_CHEETAH)
    widths = {g: torch.tensor(m).sum() for g, m in masks.items()}
    rebuilt = kept_counts(HALF_CHEETAH, masks)
    assert sum(masks["state.2"]) == 0  # an emptied DenseNet layer among them
    assert float(expected_params(structure, widths)) == rebuilt["train"]
    assert float(expected_params(structure, widths, deploy_only=True)) == rebuilt["deploy"]


def test_gradient_equals_marginal_counts():
    """∂C/∂π_j = (parameters with unit j kept) − (parameters with it removed), counted from first principles."""
    rng = np.random.default_rng(3)
    masks = random_masks(HALF_CHEETAH, rng, 0.6)
    structure = build_structure(HALF_CHEETAH)
    train0 = float(expected_params(structure, {}))
    regularizer = CostRegularizer(strength=1.0, deploy_mix=0.0, train0=train0, deploy0=1.0)
    keep_probs = {g: torch.tensor(m, dtype=torch.float64) for g, m in masks.items()}
    grads = regularizer.keep_prob_grads(structure, keep_probs)
    picker = random.Random(0)
    for group in ("state.0", "state.5", "state_action.1", "state_action.7", "actor.0", "actor.1", "critic1.0",
                  "critic2.1"):
        unit = picker.randrange(len(masks[group]))
        on = {g: m.copy() for g, m in masks.items()}
        off = {g: m.copy() for g, m in masks.items()}
        on[group][unit], off[group][unit] = 1.0, 0.0
        if off[group].sum() == 0 and not group.startswith("state"):
            continue
        marginal = kept_counts(HALF_CHEETAH, on)["train"] - kept_counts(HALF_CHEETAH, off)["train"]
        assert grads[group][unit].item() * train0 == pytest.approx(marginal, rel=1e-9), group


def test_deploy_mix_weights_the_deployable_cost():
    structure = build_structure(HALF_CHEETAH)
    train0 = float(expected_params(structure, {}))
    deploy0 = float(expected_params(structure, {}, deploy_only=True))
    keep_probs = {g: torch.ones(structure.groups[g]) for g in structure.gated_groups}
    only_deploy = CostRegularizer(1.0, 1.0, train0, deploy0).keep_prob_grads(structure, keep_probs)
    assert only_deploy["critic1.0"].abs().max() == 0  # critics are not part of the deployable policy
    assert only_deploy["state_action.0"].abs().max() == 0
    assert only_deploy["actor.0"].min() > 0 and only_deploy["state.0"].min() > 0
    # A state-block unit feeds every later layer and both heads: its marginal cost is many times its fan-in.
    full = CostRegularizer(1.0, 0.0, train0, deploy0).keep_prob_grads(structure, keep_probs)
    fan_in_cost = (17 + 2) / train0
    assert full["state.0"][0].item() > 20 * fan_in_cost


def test_strength_scale_prices_each_network_at_its_own_strength():
    """``strength_scale`` multiplies the marginal cost of a network's units by its factor (both critics share one), the
    others' stay; the cost itself does not change."""
    structure = build_structure(HALF_CHEETAH)
    train0 = float(expected_params(structure, {}))
    deploy0 = float(expected_params(structure, {}, deploy_only=True))
    rng = np.random.default_rng(5)
    keep_probs = {g: torch.tensor(m, dtype=torch.float64) for g, m in random_masks(HALF_CHEETAH, rng, 0.7).items()}
    factors = {"state_action": 10.0, "critic": 0.0, "actor": 0.5}
    for mix in (0.0, 0.4):
        plain = CostRegularizer(0.3, mix, train0, deploy0)
        scaled = CostRegularizer(0.3, mix, train0, deploy0, network_scales=factors)
        before = plain.keep_prob_grads(structure, keep_probs)
        after = scaled.keep_prob_grads(structure, keep_probs)
        for group in structure.gated_groups:
            network = group.split(".")[0]
            factor = factors.get("critic" if network.startswith("critic") else network, 1.0)
            assert torch.allclose(after[group], before[group] * factor, rtol=1e-12, atol=0), group
        assert after["critic2.1"].abs().max() == 0 and after["state.3"].equal(before["state.3"])
        assert scaled.normalized_cost(structure, keep_probs) == plain.normalized_cost(structure, keep_probs)


def test_strength_scale_reaches_the_regularizer_from_the_config():
    policy = XiPolicy(OBS, ACT, lambda _: 3e-4, widths=HALF_CHEETAH.to_dict(),
                      config=AgentConfig(strength_scale={"critic": 0.25}))
    assert policy.regularizer.network_scale("critic1.0") == 0.25 == policy.regularizer.network_scale("critic2.1")
    assert policy.regularizer.network_scale("actor.0") == 1.0


def test_strength_scale_default_and_a_given_mapping_replacing_it():
    """The default prices the critics at a tenth and the state-action block at 10 times the strength; a mapping given
    replaces it whole (a network it does not name is at 1), and an empty one prices every network alike."""
    from xinet_rl.config import resolve_config

    assert resolve_config("HalfCheetah-v4").strength_scale == {"state_action": 10.0, "critic": 0.1}
    assert resolve_config("HalfCheetah-v4", None, ["strength_scale={actor: 2}"]).strength_scale == {"actor": 2.0}
    assert resolve_config("HalfCheetah-v4", None, ["strength_scale={}"]).strength_scale == {}
    policy = XiPolicy(OBS, ACT, lambda _: 3e-4, widths=HALF_CHEETAH.to_dict(), config=AgentConfig())
    assert [policy.regularizer.network_scale(g) for g in ("state.0", "state_action.7", "actor.1", "critic1.0",
                                                          "critic2.1")] == [1.0, 10.0, 1.0, 0.1, 0.1]


@pytest.mark.parametrize("gated, variant", [(True, {}), (True, {"gate_estimator": "straight_through"}),
                                            (True, {"ofenet_gate_credit": "consumers"}),
                                            (True, {"ofenet_gate_credit": "consumers",
                                                    "gate_estimator": "straight_through"}),
                                            (False, {}), (True, {"ofenet_layers": 0}), (False, {"ofenet_layers": 0})],
                         ids=["xinet", "xinet-straight-through", "xinet-consumer-credit",
                              "xinet-consumer-credit-straight-through", "unpruned", "xinet-no-ofenet", "sac"])
def test_update_flops_equal_what_autograd_computes(gated, variant):
    """``update_flops`` against the matmul FLOPs counted by ``FlopCounterMode`` over real updates, for every variant
    and gate estimator, on a model pruned to irregular widths with one DenseNet layer removed: updates with and
    without a gate step, and the average over the schedule."""
    from torch.utils.flop_counter import FlopCounterMode

    from xinet_rl import XiSAC
    from xinet_rl.cost import update_flops
    from xinet_rl.envs import make_env
    from xinet_rl.pruning import prune

    model = XiSAC(make_env("HalfCheetah-v4", seed=0), seed=0, device="cpu", ofenet_units=6,
                  actor_widths=[20, 12], critic_widths=[16, 10], learning_starts=200, ofenet_pretrain_steps=2,
                  batch_size=32, buffer_size=1000, gate_update_every=3, gated=gated, prune_start=10**9,
                  **{"ofenet_layers": 3, **variant})
    model.learn(201)
    if gated:
        keep = {group: torch.arange(gate.units) < max(1, gate.units * 2 // 3)
                for group, gate in model.policy.gates().items()}
        if model.policy.has_ofenet:
            keep["state.1"] = torch.zeros(6, dtype=torch.bool)  # a whole DenseNet layer goes
        prune(model.policy, keep)
        assert len(model.policy.ofenet.state.layers) == (2 if model.policy.has_ofenet else 0)
    structure = model.policy.structure()
    estimator = model.config.gate_estimator
    with_gate = update_flops(structure, 32, gated, estimator=estimator, ofenet_credit=model.config.ofenet_gate_credit)
    without_gate = update_flops(structure, 32, gated=False)
    for _ in range(3):
        gate_step = gated and model._n_updates % 3 == 0
        counter = FlopCounterMode(display=False)
        with counter:
            model.train(1, 32)
        assert counter.get_total_flops() == (with_gate if gate_step else without_gate)
    assert model.flops()["update"] == int(32 * ((with_gate + 2 * without_gate) / 96 if gated else without_gate / 32))


@pytest.mark.parametrize("credit", ["aux", "consumers"])
def test_train_flops_count_every_update_run(credit):
    """``train_flops`` (summary ``train_flops_total``) equals the matmul FLOPs ``FlopCounterMode`` counts over
    OFENet's pre-training (with its gate steps, or without them when OFENet's consumers credit its units) and the
    updates, gate steps and a pruning event included, and is kept by save/load."""
    from torch.utils.flop_counter import FlopCounterMode

    from xinet_rl import XiSAC
    from xinet_rl.envs import make_env

    model = XiSAC(make_env("HalfCheetah-v4", seed=0), seed=0, device="cpu", ofenet_layers=3, ofenet_units=6,
                  actor_widths=[20, 12], critic_widths=[16, 10], learning_starts=200, ofenet_pretrain_steps=4,
                  batch_size=32, buffer_size=1000, gate_update_every=3, gate_lr=1e-12, prune_start=2,
                  prune_interval=2, prune_patience=1, prune_eps=1e-6, ofenet_gate_credit=credit)
    model.learn(200)  # random steps only: nothing trained yet
    assert model.train_flops == 0
    with torch.no_grad():
        model.policy.gates()["state.1"].keep_prob.zero_()  # a whole DenseNet layer is removed at update 2
        model.policy.gates()["critic1.0"].keep_prob[:5] = 0.0
    counter = FlopCounterMode(display=False)
    with counter:
        model.train(7, 32)
    assert len(model.prune_events) == 1 and model.prune_events[0]["n_updates"] == 2
    assert len(model.policy.ofenet.state.layers) == 2
    assert model.train_flops == counter.get_total_flops() > 0

    path = Path(tempfile.mkdtemp()) / "model.safetensors"
    model.save(path)
    assert XiSAC.load(path, device="cpu").train_flops == model.train_flops
