"""The final cut: when training ends, the deployable policy is cut toward a stated size (``final_deploy_params``),
its units lowest keep probability ``π`` first, for as long as its actions stay where they were.

At a fixed strength many actor units end between 0 and 1 (HalfCheetah at 0.3: 83 of the first layer's 128), each
deployed whole although the policy scales its output by ``π``. Removing them lowest ``π`` first takes HalfCheetah's
policies from 13-14% to 10% of the unpruned one's parameters at no measured cost in return; on Hopper, whose gates
keep more units, the same cut reached units the policy needs and the return fell from 937 to 272. How far a policy
can be cut is therefore measured, not assumed: the deterministic actions on the latest states of the replay buffer,
with the candidates' ``π`` set to 0 (what removing them does in mean mode), may move by at most ``tolerance`` (root
mean square over states and action dimensions; actions lie in [-1, 1]). The cut keeps the most units removed, up to
those that reach the size, within that tolerance: it may stop above the size, never below it.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn

from xinet_rl.budget import deploy_cost, fit_keep
from xinet_rl.structure import Structure, is_deployed


def final_cut_target(config, structure: Structure) -> float | None:
    """The final cut's size (config key ``final_deploy_params``) in parameters of the model built from ``structure``
    (the initial, unpruned one): a fraction in (0, 1] of its deployable policy, or a count; ``None`` without one."""
    value = getattr(config, "final_deploy_params", None)
    if value is None:
        return None
    return float(value) * float(deploy_cost(structure, {}, "params")) if value <= 1 else float(value)


def action_change(act, keep_probs: Mapping[str, Tensor], removed: list[tuple[str, int]], observations: Tensor,
                  reference: Tensor) -> float:
    """Root-mean-square change of ``act(observations)`` from ``reference`` with the ``removed`` units' ``π`` set to
    0; the ``π`` are restored before it returns."""
    saved = [(group, index, float(keep_probs[group][index])) for group, index in removed]
    with torch.no_grad():
        try:
            for group, index, _ in saved:
                keep_probs[group][index] = 0.0
            return float((act(observations) - reference).square().mean().sqrt())
        finally:
            for group, index, value in saved:
                keep_probs[group][index] = value


def cut_keep(keep: dict[str, Tensor], gates: Mapping[str, nn.Module], structure: Structure, target: float,
             act, observations: Tensor, tolerance: float, min_units: int = 1) -> tuple[dict[str, Tensor], float]:
    """``keep`` less the most deployable units, lowest ``π`` first and at most those that take the deployable
    parameters to ``target`` (:func:`~xinet_rl.budget.fit_keep`), whose removal moves the deterministic actions on
    ``observations`` by at most ``tolerance`` (:func:`action_change`). Returns the masks and that action change.

    :param act: the deterministic policy, observations to actions (in mean mode, reading the gates' ``π``)
    """
    fitted = fit_keep(keep, gates, structure, "params", target, min_units)
    keep_probs = {group: gate.keep_prob.data for group, gate in gates.items()}
    order = sorted((float(keep_probs[g][i]), g, int(i)) for g, mask in keep.items() if is_deployed(g)
                   for i in (mask & ~fitted[g]).nonzero().flatten())  # what fit_keep removes, lowest π first
    with torch.no_grad():
        reference = act(observations)
    chosen, change = 0, 0.0
    for count in range(len(order), 0, -1):  # the most removed within the tolerance
        moved = action_change(act, keep_probs, [(g, i) for _, g, i in order[:count]], observations, reference)
        if moved <= tolerance:
            chosen, change = count, moved
            break
    masks = {g: m.clone() for g, m in keep.items()}
    for _, group, index in order[:chosen]:
        masks[group][index] = False
    return masks, change
