"""The final cut: in the last stretch of training (``final_cut_from``, :class:`~xinet_rl.callbacks.FinalCut`) and
when it ends, the deployable policy is cut toward a stated size (``final_deploy_params``), the units whose removal
moves its actions least per parameter first, for as long as its actions stay where they were.

At a fixed strength many actor units end between 0 and 1 (HalfCheetah at 0.3: 83 of the first layer's 128), each
deployed whole although the policy scales its output by ``π``; and the state block keeps the units the auxiliary loss
wants, whatever the actor makes of them (Hopper: 226 of 240). How far a policy can be cut is measured, not assumed:
the deterministic actions on the latest states of the replay buffer, with the removed units' ``π`` set to 0 (what
removing them does in mean mode), may move by at most ``tolerance`` (root mean square over states and action
dimensions; actions lie in [-1, 1]). The order is measured too: in rounds, every candidate's removal is tried on top
of those already removed, and the few that add least to the mean-square change per deployable parameter they free go
next (removals add up in the mean square while they are small). Cutting lowest ``π`` first instead, Hopper's
policies stopped at 21-22% of the unpruned one's parameters within the tolerance; see ``docs/method.md``, "The final
cut". A unit whose removal would take the change past the tolerance stays; the cut stops at the size, or when no unit
is left that can go.

A small change in the actions is not always a small change in the return: a hopping gait can fall over where a
running one loses nothing (Hopper, a cut moving the actions by 0.148: 2,291 to 279 on the validation episodes;
``docs/method.md``, "The final cut in the measured order, checked on the return"). So the cut is also checked on
what it is for, when the caller can run episodes (``accept``): a cut the check refuses is followed by one allowed half
its action change, up to :data:`TRIES` cuts, and with none accepted the policy is left as trained.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Callable, Iterator, Mapping

import torch
from torch import Tensor, nn

from xinet_rl.budget import deploy_cost, unit_deploy_costs
from xinet_rl.structure import ACTOR, Structure, is_deployed, network_of


ROUNDS = 50
"""Each round of the cut removes up to this fraction (one in ``ROUNDS``) of the candidates, in the order measured at
its start: re-measuring after every unit costs a forward pass per candidate and unit."""

TRIES = 4
"""Cuts tried when the check refuses them, each allowed half the action change of the one refused before it."""


def final_cut_target(config, structure: Structure) -> float | None:
    """The final cut's size (config key ``final_deploy_params``) in parameters of the model built from ``structure``
    (the initial, unpruned one): a fraction in (0, 1] of its deployable policy, or a count; ``None`` without one."""
    value = getattr(config, "final_deploy_params", None)
    if value is None:
        return None
    return float(value) * float(deploy_cost(structure, {}, "params")) if value <= 1 else float(value)


def cut_keep(keep: dict[str, Tensor], gates: Mapping[str, nn.Module], structure: Structure, target: float,
             act, observations: Tensor, tolerance: float, min_units: int = 1) -> tuple[dict[str, Tensor], float]:
    """``keep`` less deployable units, those that move the deterministic actions on ``observations`` least per
    deployable parameter first, until the deployable parameters are at most ``target`` or no unit is left whose
    removal keeps the actions' change within ``tolerance`` (root mean square); an actor layer keeps ``min_units``. Returns the masks
    and the action change they make. The gates' ``π`` are as they were when it returns.

    :param act: the deterministic policy, observations to actions (in mean mode, reading the gates' ``π``)
    """
    masks = {g: m.clone() for g, m in keep.items()}
    keep_probs = {group: gate.keep_prob.data for group, gate in gates.items()}
    saved: list[tuple[str, int, float]] = []  # the removed units' π, restored at the end

    def widths() -> dict[str, int]:
        return {g: int(m.sum()) for g, m in masks.items()}

    def removable(group: str) -> bool:
        return network_of(group) != ACTOR or int(masks[group].sum()) > min(min_units, masks[group].numel())

    with torch.no_grad():
        reference = act(observations)

        def mean_square() -> float:
            return float((act(observations) - reference).square().mean())

        def without(group: str, index: int) -> float:  # the mean-square change with one more unit removed
            value = float(keep_probs[group][index])
            keep_probs[group][index] = 0.0
            try:
                return mean_square()
            finally:
                keep_probs[group][index] = value

        current, limit = 0.0, tolerance ** 2
        refused: set[tuple[str, int]] = set()  # units whose removal took the change past the tolerance
        try:
            while float(deploy_cost(structure, widths(), "params")) > target:
                per_unit = unit_deploy_costs(structure, widths(), "params")
                candidates = [(g, int(i)) for g, m in masks.items() if is_deployed(g) and removable(g)
                              for i in m.nonzero().flatten() if (g, int(i)) not in refused]
                if not candidates:
                    break
                ranked = sorted(candidates, key=lambda c: (without(*c) - current) / float(per_unit[c[0]]))
                for group, index in ranked[:max(1, len(ranked) // ROUNDS)]:
                    if float(deploy_cost(structure, widths(), "params")) <= target:
                        break
                    if not removable(group):
                        continue
                    change = without(group, index)
                    if change > limit:
                        refused.add((group, index))
                        continue
                    saved.append((group, index, float(keep_probs[group][index])))
                    keep_probs[group][index] = 0.0
                    masks[group][index] = False
                    current = change
        finally:
            for group, index, value in saved:
                keep_probs[group][index] = value
    return masks, math.sqrt(current)


@contextmanager
def cut_applied(gates: Mapping[str, nn.Module], masks: Mapping[str, Tensor]) -> Iterator[None]:
    """The policy as ``masks`` would leave it, in mean mode (evaluation, acting): the ``π`` of every unit ``masks``
    drops set to 0, which is exactly its removal there; restored on exit."""
    saved = {group: gate.keep_prob.data[~masks[group]].clone() for group, gate in gates.items() if group in masks}
    try:
        with torch.no_grad():
            for group in saved:
                gates[group].keep_prob.data[~masks[group]] = 0.0
        yield
    finally:
        with torch.no_grad():
            for group, values in saved.items():
                gates[group].keep_prob.data[~masks[group]] = values


def checked_cut(keep: dict[str, Tensor], gates: Mapping[str, nn.Module], structure: Structure, target: float,
                act, observations: Tensor, tolerance: float, min_units: int = 1,
                accept: Callable[[dict[str, Tensor]], bool] | None = None
                ) -> tuple[dict[str, Tensor], float, float | None]:
    """:func:`cut_keep`, kept only where ``accept`` (given the masks) says so; a refused cut is followed by one that
    moves the actions at most half as far as it did (half the tolerance would repeat a cut that stopped at the size
    well within it), up to :data:`TRIES` cuts. Returns the masks, their action change and the tolerance of the cut
    kept (``keep``, 0 and ``None`` when every cut was refused).

    :param accept: whether the policy cut to the given masks may be kept (``None``: every cut is)
    """
    for _ in range(TRIES):
        masks, change = cut_keep(keep, gates, structure, target, act, observations, tolerance, min_units)
        if accept is None or all(torch.equal(masks[g], keep[g]) for g in keep) or accept(masks):
            return masks, change, tolerance
        if change == 0.0:  # no smaller cut moves the actions less
            break
        tolerance = change / 2
    return keep, 0.0, None
