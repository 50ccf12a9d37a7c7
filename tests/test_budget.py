"""Pruning to a budget: the controller on a regression problem with a known answer, the budget's resolution and its
checks, the pruner's guard, and a budgeted agent end to end."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from xinet_rl.agents.xisac import XiSAC
from xinet_rl.budget import (FLOOR, HOLD, SETPOINT, TRANSIT_GAIN, BudgetController, deploy_cost, fit_keep, guard_keep,
                             resolve_budget)
from xinet_rl.config import AgentConfig, ConfigError, checked_value, check_consistency
from xinet_rl.cost import LossScale
from xinet_rl.gates import Gate, MaskTape, curvature_corrected
from xinet_rl.heads import GatedMLP
from xinet_rl.structure import Widths, build_structure

D, HIDDEN, TEACHER, STEPS = 6, 48, 24, 4000


def _teacher(seed):
    g = torch.Generator().manual_seed(seed)
    w, b, v = torch.randn(TEACHER, D, generator=g), torch.randn(TEACHER, generator=g) * 0.3, torch.randn(TEACHER, generator=g)
    return lambda x: F.relu(x @ w.T + b) @ v


def _params(units):  # a D-units-1 MLP: (D+1) per hidden unit, one more weight per unit into the output, its bias
    return (D + 2) * units + 1


def _flops(units):  # matmul FLOPs of one sample: 2 per weight
    return 2 * (D + 1) * units


def _train_to_budget(cost_of, budget, seed=0):
    """A gated student (48 units) of a teacher that needs 24, under a budget of fewer units than it needs: the
    regularizer's strength is driven by the controller, exactly as in the agent's gate step. Returns the cost of the
    units on at every step and the final strength."""
    torch.manual_seed(seed)
    teacher = _teacher(seed)
    net, head = GatedMLP(D, [HIDDEN], True, 1.0), nn.Linear(HIDDEN, 1)
    weights = list(net.linears.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(weights, lr=3e-3)
    gate = net.gates[0]
    gate_opt = torch.optim.Adam([gate.keep_prob], lr=1e-2)
    scale = LossScale(0.99)
    controller = BudgetController("params", float(budget), lr=0.01)
    log_strength = torch.tensor(math.log(0.01), dtype=torch.float64)  # far too weak for the budget at the start
    unit_cost = (cost_of(1) - cost_of(0)) / cost_of(HIDDEN)  # ∂C/∂π_j of the normalised cost
    costs = []

    def on_cost(above=0.0):
        return torch.tensor(float(cost_of(int((gate.keep_prob > above).sum()))), dtype=torch.float64)

    for _ in range(STEPS):
        x = torch.randn(256, D)
        y = teacher(x) + 0.1 * torch.randn(256)
        tape = MaskTape()
        out = head(net(x, tape)).squeeze(-1)
        loss = F.mse_loss(out, y)
        grads = torch.autograd.grad(loss, weights + tape.masks, retain_graph=True)
        keep_prob_grad = curvature_corrected(tape.masks, grads[len(weights):], out, gn_coef=2.0)[0]
        gate.keep_prob.grad = keep_prob_grad / scale.update(loss) + float(log_strength.exp()) * unit_cost
        before = gate.keep_prob.detach().clone()
        gate_opt.step()
        gate.project_()
        controller.hold([gate.keep_prob.data], [before], on_cost(), [torch.tensor(float(cost_of(1) - cost_of(0)))])
        cost_on = on_cost()
        expected = cost_of(float(gate.keep_prob.detach().sum()))
        controller.step(log_strength, on_cost(HOLD), torch.tensor(float(expected), dtype=torch.float64))
        costs.append(float(cost_on))
        for p, g in zip(weights, grads):
            p.grad = g
        opt.step()
    return np.array(costs), float(log_strength.exp())


@pytest.mark.parametrize("cost_of", [_params, _flops], ids=["params", "flops"])
@pytest.mark.slow
def test_the_controller_reaches_the_budget_and_stays_there(cost_of):
    budget = cost_of(12)  # half of what the teacher needs
    costs, strength = _train_to_budget(cost_of, budget)
    assert costs[0] == cost_of(HIDDEN)
    last = costs[-1000:]
    assert (last <= budget).all() and (last >= 0.85 * budget).all(), (last.min(), last.max(), budget)
    assert strength > 0.01 * 10  # the strength had to rise by far to get there


def test_a_step_moves_log_strength_by_the_clipped_log_ratio():
    controller = BudgetController("params", 100.0, lr=0.5)
    log_strength = torch.tensor(0.0, dtype=torch.float64)

    def step(on, expected):
        before = log_strength.item()
        controller.step(log_strength, torch.tensor(SETPOINT * 100 * on, dtype=torch.float64),
                        torch.tensor(SETPOINT * 100 * expected, dtype=torch.float64))
        return log_strength.item() - before

    assert step(math.e ** 0.3, math.e ** 0.2) == pytest.approx(0.5 * 0.2)  # expected above: it sets the step
    assert step(1e9, 1e8) == pytest.approx(0.5)  # far above: clipped at lr
    assert step(math.e ** 0.3, math.e ** -0.2) == pytest.approx(0.5 * TRANSIT_GAIN * 0.3)  # units on their way
    assert step(math.e ** -0.2, math.e ** -0.4) == pytest.approx(-0.5 * 0.2)  # under the setpoint: the units on
    assert step(1.0, 0.5) == pytest.approx(0.0)


def test_the_floor_puts_back_only_the_units_it_needs_those_highest_before_the_step_first():
    controller = BudgetController("params", 100.0, lr=0.1)
    before = [torch.tensor([0.5, 0.02, 0.04, 0.9]), torch.tensor([0.03, 0.0])]
    after = [torch.tensor([0.6, 0.0, 0.0, 0.9]), torch.tensor([0.0, 0.0])]  # three units went off in the step
    # 87 on, the floor at 90: 3 short; a unit of group 0 costs 2, one of group 1 costs 5
    controller.hold(after, before, torch.tensor(87.0, dtype=torch.float64),
                    [torch.tensor(2.0, dtype=torch.float64), torch.tensor(5.0, dtype=torch.float64)])
    # highest first: 0.04 (group 0, index 2) then 0.03 (group 1, index 0) cover 7 >= 3; 0.02 stays off
    assert after[0].tolist() == pytest.approx([0.6, 0.0, HOLD, 0.9])
    assert after[1].tolist() == pytest.approx([HOLD, 0.0])
    unchanged = [torch.tensor([0.0, 0.0])]
    controller.hold(unchanged, [torch.tensor([0.2, 0.0])], torch.tensor(FLOOR * 100.0, dtype=torch.float64),
                    [torch.tensor(1.0, dtype=torch.float64)])
    assert unchanged[0].tolist() == [0.0, 0.0]  # at the floor: nothing comes back


# ----- the budget's value and its resolution ------------------------------------------------------------------------
@pytest.mark.parametrize("value, expected", [(0.1, 0.1), ("10%", 0.1), (1, 1.0), (5000, 5000.0), ("null", None),
                                             (None, None)])
@pytest.mark.parametrize("key", ["target_deploy_params", "final_deploy_params"])
def test_budget_values(key, value, expected):
    assert checked_value(key, value) == expected


@pytest.mark.parametrize("value, message", [
    (0, "must be positive"), (-0.1, "must be positive"), ("150%", "must lie in (0%, 100%]"),
    ("5MFLOPs", "expects a number of parameters (above 1), a fraction"), (1234.5, "must be whole"),
    (True, "expects a number")])
@pytest.mark.parametrize("key", ["target_deploy_params", "final_deploy_params"])
def test_bad_budget_values_name_the_rule(key, value, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        checked_value(key, value)


def test_one_budget_at_a_time_and_only_with_gates():
    with pytest.raises(ConfigError, match="contradict each other"):
        check_consistency(AgentConfig(target_deploy_params=0.1, target_deploy_flops=0.1))
    with pytest.raises(ConfigError, match="needs the gated agent"):
        check_consistency(AgentConfig(target_deploy_params=0.1, gated=False))


def _structure():
    return build_structure(Widths(5, 2, 5, [4, 4], [4, 4], [16, 16], [16, 16], [16, 16]))


def test_a_fraction_is_of_the_initial_deployable_cost_and_a_count_is_absolute():
    structure = _structure()
    initial = float(deploy_cost(structure, {}, "params"))
    assert initial == 5 * 4 + 2 * 4 + 9 * 4 + 2 * 4 + 13 * 16 + 16 + 16 * 16 + 16 + 16 * 2 * 2 + 2 * 2
    assert resolve_budget(AgentConfig(target_deploy_params=0.25), structure).target == 0.25 * initial
    assert resolve_budget(AgentConfig(target_deploy_params=200), structure).target == 200
    # pre-training steers the state block (two BN layers: 5·4 + 2·4 and 9·4 + 2·4) to its share of the budget
    assert resolve_budget(AgentConfig(target_deploy_params=200), structure).state_target == 200 * 72 / initial
    flops = float(deploy_cost(structure, {}, "flops"))
    assert resolve_budget(AgentConfig(target_deploy_flops=0.5), structure).target == 0.5 * flops
    assert resolve_budget(AgentConfig(), structure) is None


def test_budgets_the_model_cannot_meet_are_refused():
    structure = _structure()
    with pytest.raises(ConfigError, match="larger than the model"):
        resolve_budget(AgentConfig(target_deploy_params=10**6), structure)
    # the smallest policy: no state units, one unit per actor layer: 5·1+1 + 1·1+1 + 1·4+4 = 16 parameters
    assert resolve_budget(AgentConfig(target_deploy_params=16), structure).target == 16
    with pytest.raises(ConfigError, match="below the smallest policy pruning can leave"):
        resolve_budget(AgentConfig(target_deploy_params=15), structure)


# ----- the pruner's guard ------------------------------------------------------------------------------------------
def test_the_guard_puts_back_the_fewest_units_that_reach_the_budget():
    structure = _structure()
    gates = {g: Gate(w) for g, w in structure.groups.items() if g in structure.gated_groups}
    keep = {g: torch.ones(gate.units, dtype=torch.bool) for g, gate in gates.items()}
    keep["actor.0"][4:] = False  # 12 actor units due: 13·12 + 12 + 16·12 = 360 parameters less
    gates["actor.0"].zero_checks[4:] = torch.arange(12)  # unit 4 left 0 last
    full = float(deploy_cost(structure, {}, "params"))
    assert guard_keep(keep, gates, structure, "params", full - 400) is keep  # far enough above: unchanged
    guarded = guard_keep(keep, gates, structure, "params", full - 330)  # 30 parameters back: one unit (30 each)
    assert guarded["actor.0"].sum() == 5 and bool(guarded["actor.0"][4])
    assert float(deploy_cost(structure, {g: int(m.sum()) for g, m in guarded.items()}, "params")) >= full - 330
    assert guard_keep(keep, gates, structure, "params", full - 300)["actor.0"].sum() == 6



def test_the_end_of_a_budgeted_run_removes_the_fewest_lowest_units_that_fit_the_budget():
    structure = _structure()
    gates = {g: Gate(w) for g, w in structure.groups.items() if g in structure.gated_groups}
    keep = {g: torch.ones(gate.units, dtype=torch.bool) for g, gate in gates.items()}
    with torch.no_grad():
        gates["actor.0"].keep_prob.copy_(torch.linspace(1.0, 0.05, gates["actor.0"].units))
    full = float(deploy_cost(structure, {}, "params"))
    assert fit_keep(keep, gates, structure, "params", full)["actor.0"].all()  # fits already: nothing removed
    fitted = fit_keep(keep, gates, structure, "params", full - 45)  # two actor units (30 each) take it under
    assert fitted["actor.0"].sum() == gates["actor.0"].units - 2 and not fitted["actor.0"][-2:].any()
    assert float(deploy_cost(structure, {g: int(m.sum()) for g, m in fitted.items()}, "params")) <= full - 45


def test_unit_costs_are_the_exact_cost_of_one_more_unit():
    structure = _structure()
    gates = {g: Gate(w) for g, w in structure.groups.items() if g in structure.gated_groups}
    with torch.no_grad():
        for gate in gates.values():
            gate.keep_prob[: gate.units // 2] = 0.0
    widths = {g: int((gate.keep_prob > 0).sum()) for g, gate in gates.items()}
    for kind, state_only in [("params", False), ("flops", False), ("params", True)]:
        controller = BudgetController(kind, 100.0, lr=0.1)
        for group, unit_cost in zip(gates, controller.unit_costs(structure, gates, state_only)):
            more = {**widths, group: widths[group] + 1}
            exact = (float(deploy_cost(structure, more, kind, state_only))
                     - float(deploy_cost(structure, widths, kind, state_only)))
            assert float(unit_cost) == exact, (kind, state_only, group)


# ----- the agent ---------------------------------------------------------------------------------------------------
TINY = dict(learning_starts=100, ofenet_pretrain_steps=20, batch_size=32, ofenet_units=4, ofenet_layers=2,
            actor_widths=[32, 32], critic_widths=[16, 16], prune_start=100, prune_interval=50, budget_lr=0.05,
            gate_lr=0.02, gate_update_every=1, prune_strength=0.1)


@pytest.mark.slow
def test_a_budgeted_agent_raises_its_strength_and_ends_as_the_policy_it_deploys():
    model = XiSAC("MlpPolicy", gym.make("Pendulum-v1"), target_deploy_params=0.3, final_deploy_params=None, seed=0,
                  **TINY)  # the budget's own end, without the final cut
    initial = model.budget_state()
    assert initial["on"] == initial["model"] == model.budget.initial and initial["prune_strength"] == pytest.approx(0.1)
    strengths = []
    model.learn(800, callback=lambda local, _: strengths.append(model.budget_state()["prune_strength"]) or True)
    state = model.budget_state()
    assert max(strengths) > 3 * 0.1  # 3x over the budget: the strength rose
    assert state["model"] >= state["target"]  # the pruner never cuts below the budget
    assert state["on"] >= FLOOR * state["target"]  # nor the gates below the floor
    assert initial["held"] == 0 and 0 <= state["held"] <= state["on"]
    assert state["on"] < initial["on"] and model.prune_events  # units went off, and were removed on the way
    # the end of a budgeted run: the model becomes the policy it deploys (the units on), and acts as before
    obs = np.zeros((4, 3), dtype=np.float32)
    before = model.predict(obs, deterministic=True)[0]
    model.cut_off_units()
    assert model.policy.param_counts()["deploy"] == model.budget_state()["model"] <= state["target"]
    if state["on"] <= state["target"]:  # only units at 0 went: it acts as before
        assert model.policy.param_counts()["deploy"] == state["on"]
        np.testing.assert_allclose(model.predict(obs, deterministic=True)[0], before, atol=1e-5)


def test_pre_training_prices_the_state_block_at_its_multiplier_and_the_state_action_block_at_prune_strength():
    model = XiSAC("MlpPolicy", gym.make("Pendulum-v1"), target_deploy_params=0.3, final_deploy_params=None, seed=0,
                  **TINY)  # the budget's own end, without the final cut
    p = model.policy
    p.regularizer.log_strength.fill_(math.log(50.0))  # the state block's multiplier, far above prune_strength
    gates = p.gates()
    ofenet = [g for g in gates if g.startswith("state")]
    assert any(g.startswith("state.") for g in ofenet) and any(g.startswith("state_action.") for g in ofenet)
    at_50 = p.regularizer.unit_costs(p.structure(), {g: gate.keep_prob for g, gate in gates.items()})
    model.updater.apply_gate_step({g: torch.zeros_like(gates[g].keep_prob) for g in ofenet}, adapt_strength=False)
    for group in ofenet:
        price = at_50[group] * (1.0 if group.startswith("state.") else 0.1 / 50.0)
        keep_prob = gates[group].keep_prob
        torch.testing.assert_close(keep_prob.grad, price.to(keep_prob.dtype).expand_as(keep_prob))


def test_the_cut_policy_is_evaluated_on_the_episodes_of_the_uncut_one(tmp_path):
    from stable_baselines3.common.logger import configure
    from stable_baselines3.common.monitor import Monitor

    from xinet_rl.callbacks import Evaluate, EvaluationsCSV
    from xinet_rl.checkpoint import set_env_state
    from xinet_rl.envs import make_env

    model = XiSAC("MlpPolicy", gym.make("Pendulum-v1"), seed=0, **TINY)
    model.set_logger(configure(None, []))
    eval_env = Monitor(make_env("Pendulum-v1", seed=7))
    evaluation = Evaluate(eval_env, 0, 3, EvaluationsCSV(tmp_path / "evaluations.csv"))
    evaluation.init_callback(model)
    first = evaluation.evaluate(0)["return_mean"]
    shown = evaluation.episodes_from
    # the same policy, evaluated on: other episodes (Pendulum starts at a random angle), another return
    assert evaluation.evaluate(0)["return_mean"] != first
    set_env_state(eval_env, shown, {})  # what FinalCut does before it evaluates the cut policy
    assert evaluation.evaluate(0)["return_mean"] == first
