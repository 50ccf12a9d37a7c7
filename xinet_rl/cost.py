"""The cost model: expected parameter counts as differentiable functions of the gate parameters ``π``.

For a linear layer whose inputs are kept with probabilities ``p`` and outputs with ``q`` the expected weight count is
``(Σp)(Σq)``, plus ``Σq`` biases, or ``2Σq`` BatchNorm affine parameters for a layer followed by BN (which has no
bias of its own: BN's shift makes it redundant). Summing over the layers of the
:class:`~xinet_rl.structure.Structure` gives ``C(π)``; autograd on it gives each unit's marginal cost, which in a
DenseNet includes every later layer, the other block, the auxiliary head and the first layers of actor and critics.
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch
from torch import Tensor, nn

from xinet_rl.structure import ACT, OBS, LayerSpec, Structure

Width = Tensor | float | int


def expected_params(structure: Structure, widths: Mapping[str, Width], deploy_only: bool = False) -> Width:
    """``C``: expected trainable parameters (targets excluded). ``widths`` maps a group to its expected width
    (``Σπ`` for a gated group, the plain width otherwise); groups not in the mapping use their structural width."""
    total: Width = 0
    for layer in structure.layers:
        if deploy_only and not layer.deploy:
            continue
        fan_in = sum(widths.get(g, structure.groups[g]) for g in layer.inputs)
        out = widths.get(layer.out, structure.groups[layer.out]) if layer.out is not None else layer.out_dim
        total = total + fan_in * out + out * (2 if layer.batchnorm else 1)
    return total


def expected_flops(structure: Structure, widths: Mapping[str, Width], deploy_only: bool = False,
                   where: Callable[[LayerSpec], bool] | None = None) -> Width:
    """Matmul FLOPs (2 per weight) of one forward pass for one sample through the selected layers."""
    total: Width = 0
    for layer in structure.layers:
        if (deploy_only and not layer.deploy) or (where is not None and not where(layer)):
            continue
        fan_in = sum(widths.get(g, structure.groups[g]) for g in layer.inputs)
        out = widths.get(layer.out, structure.groups[layer.out]) if layer.out is not None else layer.out_dim
        total = total + 2 * fan_in * out
    return total


def update_flops(structure: Structure, batch: int, gated: bool = True, gate_every: int = 1) -> int:
    """Matmul FLOPs of one gradient update (OFENet auxiliary step plus SAC step) at the current widths, averaged over
    updates when the gate step runs every ``gate_every`` updates. Equal to what autograd computes
    (``tests/test_cost.py`` counts it with ``FlopCounterMode``).

    A forward pass counts once. Backward counts once for the weight gradients of the layers being trained, and once
    for the input gradient of every layer whose input carries gradient: not the layers that read only the raw
    observation and action, nor the first actor and critic layers in their own steps (their OFENet features are
    computed without gradient). A gate step adds the curvature passes (input gradients of OFENet and critics) and
    the actor's flip forward pass (actor, state-action block, critics).
    """
    def part(test: Callable[[LayerSpec], bool]) -> int:
        return int(expected_flops(structure, {}, where=test))

    def reads_hidden(layer: LayerSpec) -> bool:  # OFENet: an input that is some layer's output
        return any(g not in (OBS, ACT) for g in layer.inputs)

    def reads_own(layer: LayerSpec) -> bool:  # actor/critic: not the first layer (which reads z_s or z_sa)
        return OBS not in layer.inputs

    ofenet = part(lambda l: l.network == "ofenet")
    ofenet_in = part(lambda l: l.network == "ofenet" and reads_hidden(l))
    state = part(lambda l: l.name.startswith("state."))
    state_action = part(lambda l: l.name.startswith("state_action."))
    actor = part(lambda l: l.network == "actor")
    actor_in = part(lambda l: l.network == "actor" and reads_own(l))
    critics = part(lambda l: l.network == "critic")
    critics_in = part(lambda l: l.network == "critic" and reads_own(l))
    no_grad = 2 * state + 2 * state_action + actor + critics  # features, next action, target critics
    aux_step = 2 * ofenet + ofenet_in
    critic_step = 2 * critics + critics_in
    actor_step = 2 * actor + actor_in + 2 * state_action + 2 * critics  # through z_sa and the critics to the action
    estimators = (ofenet_in + critics_in + actor + state_action + critics) if gated else 0
    return int(batch * (no_grad + aux_step + critic_step + actor_step + estimators / gate_every))


class CostRegularizer(nn.Module):
    """``α · [(1−β) C_train/C_train,0 + β C_deploy/C_deploy,0]`` and its gradient with respect to every ``π``.

    ``C_0`` is fixed when the regularizer is made (``π = pi_init``, unpruned) and kept as a buffer, so the trade-off
    stays the same after pruning and across save/load.
    """

    def __init__(self, alpha: float, beta: float, train0: float, deploy0: float) -> None:
        super().__init__()
        self.alpha, self.beta = float(alpha), float(beta)
        self.register_buffer("train0", torch.tensor(float(train0), dtype=torch.float64))
        self.register_buffer("deploy0", torch.tensor(float(deploy0), dtype=torch.float64))

    def normalized_cost(self, structure: Structure, pis: Mapping[str, Tensor]) -> Tensor:
        widths = {g: pi.sum() for g, pi in pis.items()}
        train = expected_params(structure, widths)
        deploy = expected_params(structure, widths, deploy_only=True)
        return (1 - self.beta) * train / self.train0.item() + self.beta * deploy / self.deploy0.item()

    def pi_grads(self, structure: Structure, pis: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``α ∂C/∂π_j``, recomputed from the current ``π`` (the per-unit coefficients the method sets itself)."""
        costs = self.unit_costs(structure, pis)
        return {g: torch.full_like(pis[g], cost) for g, cost in costs.items()}

    def unit_costs(self, structure: Structure, pis: Mapping[str, Tensor]) -> dict[str, float]:
        """``α ∂C/∂π_j`` for a unit of each group. ``C`` is multilinear in the group sums, so every unit of a group has
        the same marginal cost; it is computed in closed form from the sums (one host read) instead of by autograd."""
        names = list(pis)
        if not names:
            return {}
        with torch.no_grad():  # π >= 0, so the 1-norm is the sum: one operator call for every group
            sums = dict(zip(names, torch.stack(torch._foreach_norm([pis[g] for g in names], 1)).tolist()))
        train = marginal_costs(structure, sums)
        deploy = marginal_costs(structure, sums, deploy_only=True)
        w_train = self.alpha * (1 - self.beta) / float(self.train0)
        w_deploy = self.alpha * self.beta / float(self.deploy0)
        return {g: w_train * train.get(g, 0.0) + w_deploy * deploy.get(g, 0.0) for g in names}


def marginal_costs(structure: Structure, sums: Mapping[str, float], deploy_only: bool = False) -> dict[str, float]:
    """``∂C/∂π_j`` for a unit of each gated group: its fan-in (plus bias or BN) in its own layer, plus the expected
    width of every layer that reads its group."""
    out: dict[str, float] = {}
    for layer in structure.layers:
        if deploy_only and not layer.deploy:
            continue
        fan_in = sum(sums.get(g, structure.groups[g]) for g in layer.inputs)
        width = sums.get(layer.out, structure.groups[layer.out]) if layer.out is not None else layer.out_dim
        if layer.out is not None:
            out[layer.out] = out.get(layer.out, 0.0) + fan_in + (2 if layer.batchnorm else 1)
        for g in layer.inputs:
            if g in sums:
                out[g] = out.get(g, 0.0) + width
    return out


class LossScale(nn.Module):
    """Running scale ``s_k`` of a network's loss (exponential moving average), so that ``α`` does not depend on the
    reward scale or the environment. Starts at the first value it sees."""

    def __init__(self, decay: float = 0.99) -> None:
        super().__init__()
        self.decay = float(decay)
        self.register_buffer("value", torch.tensor(0.0))
        self.register_buffer("count", torch.tensor(0, dtype=torch.long))

    @torch.no_grad()
    def update(self, magnitude: Tensor) -> Tensor:
        magnitude = magnitude.detach().float().clamp_min(1e-8)
        if int(self.count) == 0:
            self.value.copy_(magnitude)
        else:
            self.value.mul_(self.decay).add_((1 - self.decay) * magnitude)
        self.count += 1
        return self.value
