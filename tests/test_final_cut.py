"""The final cut (``xinet_rl/final_cut.py``): the action change it measures is the one the physically cut policy
makes, it never goes past the size it is given, the tolerance decides how far toward that size it goes, and the units
no action reads go first, whatever their ``π``; a cut the return check refuses is made again allowing half its
action change, and with every one refused the policy stays as it was."""

import copy

import gymnasium as gym
import pytest
import torch

from xinet_rl.agents.xisac import XiSAC
from xinet_rl.budget import deploy_cost, unit_deploy_costs
from xinet_rl.final_cut import TRIES, checked_cut, cut_applied, cut_keep, final_cut_target
from xinet_rl.pruning import prune
from xinet_rl.structure import is_deployed

SMALL = dict(learning_starts=100, ofenet_pretrain_steps=0, batch_size=32, ofenet_units=4, ofenet_layers=2,
             actor_widths=[32, 32], critic_widths=[16, 16])


def _model():
    model = XiSAC("MlpPolicy", gym.make("Pendulum-v1"), seed=0, device="cpu", **SMALL)
    gates = model.policy.gates()
    with torch.no_grad():  # π spread over (0, 1] in the actor's layers, so the lowest units are the first candidates
        for group in ("actor.0", "actor.1"):
            gates[group].keep_prob.copy_(torch.linspace(1.0, 0.01, gates[group].units)[torch.randperm(32)])
    return model


def _deploy(model) -> int:
    return model.policy.param_counts()["deploy"]


def _setup(model):
    p = model.policy
    keep = {g: torch.ones(gate.units, dtype=torch.bool) for g, gate in p.gates().items()}
    states = torch.randn(256, 3)
    return p, keep, states, (lambda o: p._act(o, True))


def test_the_measured_action_change_is_that_of_the_physically_cut_policy():
    model = _model()
    p, keep, states, act = _setup(model)
    target = 0.6 * _deploy(model)
    masks, change = cut_keep(keep, p.gates(), p.structure(), target, act, states, tolerance=float("inf"))
    with torch.no_grad():
        before = act(states)
    cut = copy.deepcopy(model)
    prune(cut.policy, masks)
    with torch.no_grad():
        exact = float((cut.policy._act(states, True) - before).square().mean().sqrt())
    assert change == pytest.approx(exact, rel=1e-5, abs=1e-6) and change > 0
    # with any tolerance it reaches the size, no further: one unit fewer removed would not have fitted
    largest = max(float(c) for c in unit_deploy_costs(p.structure(), {g: int(m.sum()) for g, m in masks.items()},
                                                       "params").values())
    assert _deploy(cut) <= target < _deploy(cut) + largest


def test_the_tolerance_decides_how_far_the_cut_goes():
    model = _model()
    p, keep, states, act = _setup(model)
    target = 0.3 * _deploy(model)

    def cut(tolerance):
        masks, change = cut_keep(keep, p.gates(), p.structure(), target, act, states, tolerance)
        assert change <= tolerance
        return float(deploy_cost(p.structure(), {g: int(m.sum()) for g, m in masks.items()}, "params")), change

    full_size, full_change = cut(float("inf"))
    half_size, half_change = cut(full_change / 2)
    none_size, none_change = cut(0.0)
    assert full_size <= target < half_size < none_size <= _deploy(model)
    assert 0 < half_change <= full_change / 2 and none_change == 0.0
    # the gates are as they were: the search sets π to 0 and back
    assert sorted(p.gates()["actor.0"].keep_prob.tolist()) == pytest.approx(torch.linspace(0.01, 1.0, 32).tolist())


def test_units_no_action_reads_go_first_whatever_their_pi():
    model = _model()
    p, keep, states, act = _setup(model)
    gates = p.gates()
    dead = [3, 7, 11, 20]  # the action head ignores these units of the actor's last layer, whose π is 1
    with torch.no_grad():
        p.actor.mu.weight[:, dead] = 0.0
        gates["actor.1"].keep_prob[dead] = 1.0
    with torch.no_grad():  # brute force: the units whose removal alone leaves every action as it is
        before, idle = act(states), set()
        for group, gate in gates.items():
            for index in range(gate.units if is_deployed(group) else 0):
                value = float(gate.keep_prob[index])
                gate.keep_prob[index] = 0.0
                if torch.equal(act(states), before):
                    idle.add((group, index))
                gate.keep_prob[index] = value
    assert {("actor.1", i) for i in dead} <= idle
    # lowest π first, the first unit would move the actions; measured, exactly the idle units go (with ReLU, some
    # units of a fresh network are off on every state), and none of the others
    masks, change = cut_keep(keep, gates, p.structure(), 0.1 * _deploy(model), act, states, tolerance=0.0)
    assert change == 0.0
    assert {(g, int(i)) for g, m in masks.items() for i in (~m).nonzero().flatten()} == idle


def test_the_size_is_a_fraction_of_the_initial_policy_or_a_count():
    model = _model()
    structure = model.policy.structure()
    initial = _deploy(model)
    assert final_cut_target(model.config, structure) == pytest.approx(0.1 * initial)  # the default
    assert final_cut_target(type(model.config)(final_deploy_params=5000), structure) == 5000
    assert final_cut_target(type(model.config)(final_deploy_params=None), structure) is None


def test_the_policy_under_cut_applied_acts_as_the_physically_cut_one_and_is_restored():
    model = _model()
    p, keep, states, act = _setup(model)
    masks, _ = cut_keep(keep, p.gates(), p.structure(), 0.5 * _deploy(model), act, states, tolerance=float("inf"))
    before = {g: gate.keep_prob.detach().clone() for g, gate in p.gates().items()}
    cut = copy.deepcopy(model)
    prune(cut.policy, masks)
    with torch.no_grad():
        with cut_applied(p.gates(), masks):
            applied = act(states)
        physical = cut.policy._act(states, True)
        assert torch.allclose(applied, physical, atol=1e-6) and not torch.allclose(applied, act(states), atol=1e-3)
    assert all(torch.equal(gate.keep_prob, before[g]) for g, gate in p.gates().items())


def test_a_refused_cut_is_made_again_allowing_half_its_action_change():
    model = _model()
    p, keep, states, act = _setup(model)
    target = 0.3 * _deploy(model)
    _, tolerance = cut_keep(keep, p.gates(), p.structure(), target, act, states, float("inf"))  # reaches the size
    tried = []

    def accept(masks):  # refuses the first cut; records what it was shown
        tried.append({g: m.clone() for g, m in masks.items()})
        return len(tried) == 2

    masks, change, used = checked_cut(keep, p.gates(), p.structure(), target, act, states, 2 * tolerance,
                                      accept=accept)
    first, first_change = cut_keep(keep, p.gates(), p.structure(), target, act, states, 2 * tolerance)
    assert first_change == tolerance  # within twice the tolerance it needs, it stops at the size with the same change
    second, second_change = cut_keep(keep, p.gates(), p.structure(), target, act, states, tolerance / 2)
    assert len(tried) == 2 and used == tolerance / 2 and change == second_change <= tolerance / 2
    assert all(torch.equal(tried[0][g], first[g]) and torch.equal(masks[g], second[g]) for g in keep)
    assert sum(int(m.sum()) for m in first.values()) < sum(int(m.sum()) for m in second.values())


def test_with_every_cut_refused_the_policy_stays_as_it_was():
    model = _model()
    p, keep, states, act = _setup(model)
    tried = []
    masks, change, used = checked_cut(keep, p.gates(), p.structure(), 0.3 * _deploy(model), act, states, 0.2,
                                      accept=lambda m: tried.append(m) is not None)
    assert len(tried) == TRIES and used is None and change == 0.0
    assert all(torch.equal(masks[g], keep[g]) for g in keep)
