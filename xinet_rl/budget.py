"""Pruning to a budget: the user states the deployable policy's size, a controller finds the strength.

The regularizer's strength ``α`` is the price of one unit of (normalised) cost; a budget ``B`` on the deployable
policy is a constraint, and ``α`` its Lagrange multiplier. The controller is dual ascent on ``log α``, taken at every
gate step of the SAC phase::

    log α  +=  budget_lr · clip(gap, -1, 1),   S = SETPOINT · B
    gap = log(C(π) / S)                  while the expected cost C(π) is at or above S,
          TRANSIT_GAIN · log(C_on / S)   while C(π) is under S but the units on are not,
          log(C_on / S)                  once the units on are under S.

What has to end within the budget is ``C_on``, the deployable cost of the units that are on (``π > prune_eps``): the
policy that ``xinet-export`` writes (units at 0 are left out of it). The expected cost sits below it while gates are
between 0 and 1 (up to a quarter below on HalfCheetah), and it lags: a unit counts in ``C_on`` until its ``π`` has
travelled all the way to 0, hundreds of gate steps after ``α`` made it go. Driven by ``C_on`` alone, ``α`` kept
rising through that lag and overshot by orders of magnitude (HalfCheetah, 5% budget: ``α`` 53 at the end of
pre-training, every state unit but two gone). So ``α`` rises on the expected cost, which answers at once, stops when
that reaches the setpoint, pushes gently while units are still on their way down (or stuck between 0 and 1), and
falls on ``C_on`` once the policy is under the setpoint. The log of the ratio makes the step the same at every scale
of budget; the clip bounds it while the policy is still far above the budget; working on ``log α`` keeps ``α``
positive. The setpoint sits a little under the budget so that units switching on and off near the end stay within it.

A unit whose ``π`` reached 0 rarely comes back (while it is off its weights get no gradient), so the controller's lag
(``α`` keeps rising while units are on their way down) would overshoot the budget for good. So the budget is a band:
when a gate step takes ``C_on`` below ``FLOOR · B``, as few of the units that went off in that step as fill the gap
are held on at ``π = HOLD``, those that stood highest before the step first (a projection onto ``C_on ≥ FLOOR · B``,
as the clamp to [0, 1] is a projection onto the box). A held unit is on only by the floor, so the controller's "units
on" leave it out (``free``): with the floor binding, they are under the setpoint and ``α`` falls until useful units
rise again. (Holding every unit that went off in the step, and counting held units as on, left 115 of 154 actor units
at exactly ``HOLD`` on HalfCheetah at a 5% budget, and ``α`` kept rising on them: commit d94534b.)

In OFENet's pre-training only OFENet's gates move, and the state block it leaves is hard to shrink later (a trained
state unit's credit from the auxiliary loss outweighs its cost). So pre-training has a constraint of its own, the
state block within its share of the budget (its share of the initial policy), with its own multiplier: the same
controller on the state block's costs. That multiplier prices the state block only; the state-action block (not
deployed) keeps ``prune_strength`` (at the state block's price it kept 25 of 240 units on HalfCheetah at a 5% budget,
and the critics lost their features). The SAC phase then starts the budget's multiplier afresh at ``prune_strength``
(carried over, the pre-training multiplier of 50 on HalfCheetah stripped the actor and critics in the first updates).

The pruner never cuts the model below ``B`` (:func:`guard_keep`): units at 0 that the
budget does not need to lose stay in the tensors and may come back if the strength falls.

Every step is tensor work (no host read), so a CUDA graph holds it; the state (``log α`` in the regularizer, the
absolute budget here) is in the policy's ``state_dict``, so checkpoints continue it exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import torch
from torch import Tensor, nn

from xinet_rl.config import ConfigError
from xinet_rl.cost import expected_flops, expected_params
from xinet_rl.structure import ACTOR, Structure, is_deployed, network_of

SETPOINT = 0.95
"""The controller aims at this fraction of the budget (see the module's docstring)."""

TRANSIT_GAIN = 0.1
"""The controller's gain while the expected cost is under the setpoint but the units on are not (see the module's
docstring)."""

FLOOR = 0.9
"""A gate step does not take the deployable cost of the units on below this fraction of the budget."""

HOLD = 1e-3
"""Where a unit that would go below the floor is held (above ``prune_eps``; a unit at ``HOLD`` contributes a
thousandth of its output)."""

LOG_STRENGTH_RANGE = (math.log(1e-4), math.log(1e4))
"""Bounds of ``log α``: a budget the model cannot meet (all units of the deployable policy already at the floor)
must not drive the strength to overflow."""

KINDS = {"target_deploy_params": "params", "target_deploy_flops": "flops"}
UNITS = {"params": "parameters", "flops": "FLOPs per action"}


def deploy_cost(structure: Structure, widths: Mapping[str, Tensor | float | int], kind: str,
                state_only: bool = False) -> Tensor | float:
    """The deployable policy's parameters (``kind="params"``) or matmul FLOPs per action (``"flops"``) at the given
    group widths (structural widths for groups not in ``widths``); ``state_only``: those of OFENet's state block."""
    if state_only:
        structure = Structure(structure.groups, [l for l in structure.layers if l.deploy and l.network == "ofenet"],
                              structure.version)
    if kind == "params":
        return expected_params(structure, widths, deploy_only=True)
    return expected_flops(structure, widths, deploy_only=True)


def unit_deploy_costs(structure: Structure, widths: Mapping[str, Tensor | float | int], kind: str,
                      state_only: bool = False) -> dict[str, Tensor | float]:
    """Per group, the deployable cost of one more unit at ``widths``: ``∂C/∂w``, exact, as every layer's cost is
    linear in each group's width (a layer reads other groups, never its own)."""
    layers = [l for l in structure.layers if l.deploy and (not state_only or l.network == "ofenet")]
    per_unit: dict[str, Tensor | float] = {g: 0.0 for g in structure.groups}
    for layer in layers:
        fan_in = sum(widths.get(g, structure.groups[g]) for g in layer.inputs)
        out = widths.get(layer.out, structure.groups[layer.out]) if layer.out is not None else layer.out_dim
        scale = 1 if kind == "params" else 2  # FLOPs: 2 per weight, biases and BatchNorm not counted
        for group in layer.inputs:
            per_unit[group] = per_unit[group] + scale * out
        if layer.out is not None:
            extra = (2 if layer.batchnorm else 1) if kind == "params" else 0
            per_unit[layer.out] = per_unit[layer.out] + scale * fan_in + extra
    return per_unit


@dataclass(frozen=True)
class Budget:
    """A resolved budget: ``kind`` (``params`` or ``flops``), ``target`` (absolute) and the initial model's cost."""

    key: str
    kind: str
    target: float
    initial: float
    state_initial: float = 0.0  # the state block's share of ``initial``

    @property
    def state_target(self) -> float:
        """The state block's part of the budget in OFENet's pre-training: its share of the initial policy."""
        return self.target * self.state_initial / self.initial

    @property
    def fraction(self) -> float:
        return self.target / self.initial


def resolve_budget(config, structure: Structure, min_units: int = 1) -> Budget | None:
    """The budget that ``config`` states, as an absolute cost of the model built from ``structure`` (the initial,
    unpruned one); ``None`` without a budget. A budget above the initial policy's cost or below the smallest policy the
    pruner can leave (every DenseNet layer removed, ``min_units`` per actor layer) is a :class:`ConfigError`."""
    keys = [key for key in KINDS if getattr(config, key, None) is not None]
    if not keys:
        return None
    key = keys[0]
    kind, value = KINDS[key], float(getattr(config, key))
    initial = float(deploy_cost(structure, {}, kind))
    target = value * initial if value <= 1 else value
    if target > initial:
        raise ConfigError(f"config key '{key}' ({value:g}) is larger than the model: its deployable policy has "
                          f"{initial:.0f} {UNITS[kind]} at the start")
    floor = {g: (min(min_units, w) if network_of(g) == ACTOR else 0) for g, w in structure.groups.items()
             if g in structure.gated_groups}
    smallest = float(deploy_cost(structure, floor, kind))
    if target < smallest:
        raise ConfigError(f"config key '{key}' ({value:g}) is below the smallest policy pruning can leave "
                          f"({smallest:.0f} {UNITS[kind]}: no OFENet state units, {min_units} unit(s) per actor "
                          f"layer)")
    return Budget(key, kind, target, initial, float(deploy_cost(structure, {}, kind, state_only=True)))


class BudgetController(nn.Module):
    """Dual ascent on the regularizer's ``log α`` toward a deployable-cost budget (see the module's docstring).

    :param kind: ``params`` or ``flops``.
    :param target: the budget, an absolute cost.
    :param lr: the step on ``log α`` per gate step at a log-ratio of 1.
    :param eps: a unit is off when ``π <= eps`` (the pruner's ``prune_eps``).
    :param state_target: the state block's part of the budget, which OFENet's pre-training steers to (only OFENet's
        gates move then, and the state block it leaves is hard to shrink later).
    """

    def __init__(self, kind: str, target: float, lr: float, eps: float = 0.0, state_target: float = 0.0) -> None:
        super().__init__()
        self.kind, self.lr, self.eps = kind, float(lr), float(eps)
        self.register_buffer("target", torch.tensor(float(target), dtype=torch.float64))
        self.register_buffer("state_target", torch.tensor(float(state_target), dtype=torch.float64))

    def _on_widths(self, gates: Mapping[str, nn.Module], free: bool = False) -> dict[str, Tensor]:
        above = self.eps + HOLD if free else self.eps
        return {g: (gate.keep_prob.detach() > above).sum().to(torch.float64) for g, gate in gates.items()}

    def on_cost(self, structure: Structure, gates: Mapping[str, nn.Module], state_only: bool = False,
                free: bool = False) -> Tensor:
        """``C_on``: the deployable cost (``state_only``: of the state block) of the units whose ``π`` is above
        ``eps`` (``free``: above the floor's ``HOLD``, the units that are on by their own gradient), a 0-dim float64
        tensor."""
        widths = self._on_widths(gates, free)
        return torch.as_tensor(deploy_cost(structure, widths, self.kind, state_only), dtype=torch.float64)

    def unit_costs(self, structure: Structure, gates: Mapping[str, nn.Module], state_only: bool = False
                   ) -> list[Tensor]:
        """Per gate, the deployable cost (``state_only``: of the state block) of one more unit on, at the current
        widths of the units on (:func:`unit_deploy_costs`)."""
        costs = unit_deploy_costs(structure, self._on_widths(gates), self.kind, state_only)
        return [torch.as_tensor(costs[g], dtype=torch.float64) for g in gates]

    def floor(self, structure: Structure, gates: Mapping[str, nn.Module], before: list[Tensor],
              state_only: bool = False, target: Tensor | None = None) -> None:
        """:meth:`hold` after a gate step, from the widths of the units on counted once."""
        widths = self._on_widths(gates)
        cost = torch.as_tensor(deploy_cost(structure, widths, self.kind, state_only), dtype=torch.float64)
        per_unit = unit_deploy_costs(structure, widths, self.kind, state_only)
        self.hold([gate.keep_prob for gate in gates.values()], before, cost,
                  [torch.as_tensor(per_unit[g], dtype=torch.float64) for g in gates], target)

    @torch.no_grad()
    def hold(self, keep_probs: list[Tensor], before: list[Tensor], cost: Tensor, unit_costs: list[Tensor],
             target: Tensor | None = None) -> None:
        """If ``cost`` (``C_on`` after a gate step) is below the floor of ``target`` (default: the budget), put back on
        at ``HOLD``, in place, as few of the units the step took off (``π`` above ``eps`` in ``before``, at most
        ``eps`` now) as fill the gap, those that stood highest before the step first. ``unit_costs``: per gate, the
        deployable cost of one of its units (0 where the gate's units are not deployed). Branch-free."""
        gap = FLOOR * (self.target if target is None else target) - cost
        dropped = [(b > self.eps) & (keep_prob <= self.eps) for b, keep_prob in zip(before, keep_probs)]
        rank = torch.cat([torch.where(d, b, torch.full_like(b, -1.0)) for d, b in zip(dropped, before)])
        price = torch.cat([d.to(torch.float64) * c.to(torch.float64) for d, c in zip(dropped, unit_costs)])
        order = rank.argsort(descending=True, stable=True)
        sorted_price = price[order]
        spent_before = sorted_price.cumsum(0) - sorted_price  # the cost restored ahead of each unit in the order
        back = torch.zeros_like(price, dtype=torch.bool).scatter(0, order, (spent_before < gap) & (sorted_price > 0))
        for keep_prob, put_back in zip(keep_probs, back.split([keep_prob.numel() for keep_prob in keep_probs])):
            held = torch.full_like(keep_prob, self.eps + HOLD)
            keep_prob.copy_(torch.where(put_back.view_as(keep_prob), held, keep_prob))

    @torch.no_grad()
    def expected_cost(self, structure: Structure, gates: Mapping[str, nn.Module], state_only: bool = False) -> Tensor:
        """``C(π)``: the expected deployable cost (``state_only``: of the state block), a 0-dim float64 tensor."""
        widths = {g: gate.keep_prob.detach().sum().to(torch.float64) for g, gate in gates.items()}
        return torch.as_tensor(deploy_cost(structure, widths, self.kind, state_only), dtype=torch.float64)

    @torch.no_grad()
    def step(self, log_strength: Tensor, on: Tensor, expected: Tensor, target: Tensor | None = None) -> None:
        """One dual-ascent step on ``log_strength`` (in place) toward ``target`` (default: the budget), from the cost
        of the units on and the expected cost (see the module's docstring for the three cases). Branch-free."""
        setpoint = SETPOINT * (self.target if target is None else target).clamp_min(1.0)
        on_gap = torch.log(on.clamp_min(1.0) / setpoint)
        expected_gap = torch.log(expected.clamp_min(1e-6) / setpoint)
        gap = torch.where(expected_gap >= 0, expected_gap, torch.where(on_gap > 0, TRANSIT_GAIN * on_gap, on_gap))
        log_strength.add_(self.lr * gap.clamp(-1.0, 1.0)).clamp_(*LOG_STRENGTH_RANGE)


def guard_keep(keep: dict[str, Tensor], gates: Mapping[str, nn.Module], structure: Structure, kind: str,
               target: float) -> dict[str, Tensor]:
    """``keep`` with as few of the units it would remove put back as take the model's deployable cost to at least
    ``target``: the units of the deployable policy that left 0 last (fewest checks at 0) come back first."""
    def cost(masks: Mapping[str, Tensor]) -> float:
        return float(deploy_cost(structure, {g: int(m.sum()) for g, m in masks.items()}, kind))

    if cost(keep) >= target:
        return keep
    candidates = []  # (checks at 0, group, index) of every deployable unit that would be removed
    for group, mask in keep.items():
        if is_deployed(group):
            checks = gates[group].zero_checks
            candidates += [(int(checks[i]), group, int(i)) for i in (~mask).nonzero().flatten()]
    candidates.sort()

    def with_first(count: int) -> dict[str, Tensor]:
        masks = {g: m.clone() for g, m in keep.items()}
        for _, group, index in candidates[:count]:
            masks[group][index] = True
        return masks

    low, high = 1, len(candidates)  # the fewest units put back that reach the target (cost grows with count)
    while low < high:
        middle = (low + high) // 2
        if cost(with_first(middle)) >= target:
            high = middle
        else:
            low = middle + 1
    return with_first(low)


def fit_keep(keep: dict[str, Tensor], gates: Mapping[str, nn.Module], structure: Structure, kind: str,
             target: float, min_units: int = 1) -> dict[str, Tensor]:
    """``keep`` less as few deployable units as take the model's deployable cost to at most ``target``, those with
    the lowest ``π`` first (in mean mode a unit's output is scaled by its ``π``, so these change the policy least);
    an actor layer keeps ``min_units``. The end of a budgeted run: the policy it deploys fits the budget."""
    masks = {g: m.clone() for g, m in keep.items()}

    def cost() -> float:
        return float(deploy_cost(structure, {g: int(m.sum()) for g, m in masks.items()}, kind))

    candidates = []  # (π, group, index) of every deployable unit kept
    for group, mask in masks.items():
        if is_deployed(group):
            keep_prob = gates[group].keep_prob.detach()
            candidates += [(float(keep_prob[i]), group, int(i)) for i in mask.nonzero().flatten()]
    candidates.sort()
    for _, group, index in candidates:
        if cost() <= target:
            break
        if network_of(group) == ACTOR and int(masks[group].sum()) <= min(min_units, masks[group].numel()):
            continue
        masks[group][index] = False
    return masks
