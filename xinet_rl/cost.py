"""The cost model: expected parameter counts as differentiable functions of the gates' keep probabilities ``π``.

For a linear layer whose inputs are kept with probabilities ``p`` and outputs with ``q`` the expected weight count is
``(Σp)(Σq)``, plus ``Σq`` biases, or ``2Σq`` BatchNorm affine parameters for a layer followed by BN (which has no
bias of its own: BN's shift makes it redundant). Summing over the layers of the
:class:`~xinet_rl.structure.Structure` gives ``C(π)``; autograd on it gives each unit's marginal cost, which in a
DenseNet includes every later layer, the other block, the auxiliary head and the first layers of actor and critics.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from xinet_rl.structure import ACT, CRITICS, OBS, STATE, STATE_ACTION, LayerSpec, Structure, network_of

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


def update_flops(structure: Structure, batch: int, gated: bool = True, gate_every: int = 1,
                 estimator: str = "curvature", ofenet_credit: str = "aux") -> int:
    """Matmul FLOPs of one gradient update (OFENet auxiliary step plus SAC step) at the current widths, averaged over
    updates when the gate step runs every ``gate_every`` updates. Equal to what autograd computes
    (``tests/test_cost.py`` counts it with ``FlopCounterMode``).

    A forward pass counts once. Backward counts once for the weight gradients of the layers being trained, and once
    for the input gradient of every layer whose input carries gradient: not the layers that read only the raw
    observation and action, nor the first actor and critic layers in their own steps (their OFENet features are
    computed without gradient). A gate step adds the curvature passes (input gradients of OFENet and critics) and
    the actor's flip forward pass (actor, state-action block, critics); with ``ofenet_credit`` "consumers" also the
    passes that credit OFENet's units with the critic loss (OFENet and critics forward, backward to the masks, and
    the curvature pass) and the state block's with the actor loss (forward, backward to the masks, flip forward).
    """
    def part(test: Callable[[LayerSpec], bool]) -> int:
        return int(expected_flops(structure, {}, where=test))

    def reads_hidden(layer: LayerSpec) -> bool:  # OFENet: an input that is some layer's output
        return any(g not in (OBS, ACT) for g in layer.inputs)

    def reads_own(layer: LayerSpec) -> bool:  # actor/critic: not the first layer (which reads z_s or z_sa)
        return OBS not in layer.inputs

    ofenet = part(lambda l: l.network == "ofenet")
    ofenet_in = part(lambda l: l.network == "ofenet" and reads_hidden(l))
    state = part(lambda l: network_of(l.name) == STATE)
    state_action = part(lambda l: network_of(l.name) == STATE_ACTION)
    actor = part(lambda l: l.network == "actor")
    actor_in = part(lambda l: l.network == "actor" and reads_own(l))
    critics = part(lambda l: l.network == "critic")
    critics_in = part(lambda l: l.network == "critic" and reads_own(l))
    no_grad = 2 * state + 2 * state_action + actor + critics  # features, next action, target critics
    aux_step = 2 * ofenet + ofenet_in
    critic_step = 2 * critics + critics_in
    actor_step = 2 * actor + actor_in + 2 * state_action + 2 * critics  # through z_sa and the critics to the action
    # the curvature estimator's passes; the straight-through one reads the mask gradients of the backward pass alone
    estimators = (ofenet_in + critics_in + actor + state_action + critics) if gated and estimator == "curvature" else 0
    if gated and ofenet_credit == "consumers":
        passes = 2 if estimator == "curvature" else 1  # the backward to the masks, and the curvature or flip pass
        state_in = part(lambda l: network_of(l.name) == STATE and reads_hidden(l))
        if state + state_action:  # credit from the critic loss: every layer from the masks to q carries gradient
            estimators += state + state_action + critics + passes * (critics + state_action + state_in)
        if state:  # credit from the actor loss (the flip pass is a second forward)
            estimators += passes * (state + actor + state_action + critics) + critics + state_action + actor + state_in
    return int(batch * (no_grad + aux_step + critic_step + actor_step + estimators / gate_every))


def pretrain_flops(structure: Structure, batch: int, gated: bool = True, estimator: str = "curvature") -> int:
    """Matmul FLOPs of one OFENet pre-training update: the auxiliary step (forward, weight gradients, input gradients
    of the layers that read other layers) and, with ``gated`` (pre-training takes gate steps), its gate step's
    curvature pass, which runs at every pre-training update. The same counting as :func:`update_flops`."""
    def reads_hidden(layer: LayerSpec) -> bool:
        return any(g not in (OBS, ACT) for g in layer.inputs)

    ofenet = int(expected_flops(structure, {}, where=lambda l: l.network == "ofenet"))
    ofenet_in = int(expected_flops(structure, {}, where=lambda l: l.network == "ofenet" and reads_hidden(l)))
    return int(batch * (2 * ofenet + ofenet_in + (ofenet_in if gated and estimator == "curvature" else 0)))


class CostRegularizer(nn.Module):
    """``α · [(1−β) C_train/C_train,0 + β C_deploy/C_deploy,0]`` and its gradient with respect to every gate's keep
    probability ``π``. In code the pruning strength ``α`` is ``strength`` and the mix ``β`` is ``deploy_mix``, apart
    from SAC's policy and entropy temperature.

    ``C_0`` is fixed when the regularizer is made (``π = gate_init``, unpruned) and kept as a buffer, so the trade-off
    stays the same after pruning and across save/load. The strength is a buffer too (``log_strength``), fixed unless
    a budget controller moves it.

    :param strength: the pruning strength ``α`` (config key ``prune_strength``): return versus size.
    :param deploy_mix: ``β`` (config key ``deploy_cost_mix``), the weight of the deployable policy's own cost.
    :param train0: the expected parameter count of the whole initial model, ``C_train,0``.
    :param deploy0: that of the initial deployable policy, ``C_deploy,0``.
    :param network_scales: a factor on the marginal cost of every unit of a network (config key ``strength_scale``:
        ``state``, ``state_action``, ``actor``, ``critic``; a network not named: 1), so each network is priced at its
        own strength; :meth:`normalized_cost` stays the cost itself.
    """

    def __init__(self, strength: float, deploy_mix: float, train0: float, deploy0: float,
                 network_scales: Mapping[str, float] | None = None) -> None:
        super().__init__()
        self.deploy_mix = float(deploy_mix)
        self.network_scales = dict(network_scales or {})
        self.register_buffer("train0", torch.tensor(float(train0), dtype=torch.float64))
        self.register_buffer("deploy0", torch.tensor(float(deploy0), dtype=torch.float64))
        # the strength α, as its log: a budget's controller (xinet_rl/budget.py) moves it in place during training
        self.register_buffer("log_strength", torch.tensor(float(strength), dtype=torch.float64).log())

    @property
    def strength(self) -> float:
        """The current strength ``α`` (a host read)."""
        return float(self.log_strength.exp())

    def normalized_cost(self, structure: Structure, keep_probs: Mapping[str, Tensor]) -> Tensor:
        widths = {g: keep_prob.sum() for g, keep_prob in keep_probs.items()}
        train = expected_params(structure, widths)
        deploy = expected_params(structure, widths, deploy_only=True)
        return (1 - self.deploy_mix) * train / self.train0.item() + self.deploy_mix * deploy / self.deploy0.item()

    def keep_prob_grads(self, structure: Structure, keep_probs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``α ∂C/∂π_j``, recomputed from the current ``π`` (the per-unit coefficients the method sets itself)."""
        costs = self.unit_costs(structure, keep_probs)
        return {g: cost.to(keep_probs[g].dtype).expand_as(keep_probs[g]).clone() for g, cost in costs.items()}

    def unit_costs(self, structure: Structure, keep_probs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``α ∂C/∂π_j`` for a unit of each group, as 0-dim float64 tensors on ``π``'s device. ``C`` is multilinear in
        the group sums ``s``, so every unit of a group has the same marginal cost, affine in ``s``: ``a + M s``. The
        map is built once per structure; what is left is a few operator calls and no host read (a CUDA graph can
        hold it, ``α`` included)."""
        names = list(keep_probs)
        if not names:
            return {}
        first = keep_probs[names[0]]
        offsets, matrix = self._affine_map(structure, tuple(names), first.device)
        with torch.no_grad():  # π >= 0, so the 1-norm is the sum: one operator call for every group
            sums = torch.stack(torch._foreach_norm([keep_probs[g] for g in names], 1)).to(torch.float64)
            # elementwise, not a matrix product: these few hundred FLOPs are not the model's (FlopCounterMode)
            costs = (offsets + (matrix * sums).sum(-1)).sum(0) * self.log_strength.exp()
        return dict(zip(names, costs.unbind()))

    def _affine_map(self, structure: Structure, names: tuple[str, ...], device: torch.device
                    ) -> tuple[Tensor, Tensor]:
        """``(a, M)`` of :func:`marginal_cost_map` for the training and the deployed cost, each scaled by its weight
        ``(1−β)/C_train,0`` or ``β/C_deploy,0`` (``α`` multiplies the result) and stacked, on ``device``. Cached
        for the structure's version and widths (a pruned model has a new version) and until ``C_0`` is loaded."""
        key = (structure.version, tuple(structure.groups.values()), names, str(device))
        cached = self.__dict__.get("_map_cache")
        if cached is None or cached[0] != key:
            weights = np.array([(1 - self.deploy_mix) / float(self.train0), self.deploy_mix / float(self.deploy0)])
            maps = [marginal_cost_map(structure, names, deploy_only=d) for d in (False, True)]
            factors = np.array([self.network_scale(g) for g in names])
            offsets = np.stack([a for a, _ in maps]) * weights[:, None] * factors
            matrix = np.stack([m for _, m in maps]) * weights[:, None, None] * factors[:, None]
            self._map_cache = (key, torch.tensor(offsets, dtype=torch.float64, device=device),
                               torch.tensor(matrix, dtype=torch.float64, device=device))
            cached = self._map_cache
        return cached[1], cached[2]

    def network_scale(self, group: str) -> float:
        """The factor on the marginal cost of ``group``'s units (both critics share the name ``critic``)."""
        network = network_of(group)
        return self.network_scales.get("critic" if network in CRITICS else network, 1.0)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        self.__dict__.pop("_map_cache", None)  # C_0 may change
        # model files written before the strength was a buffer: the configured strength
        state_dict.setdefault(prefix + "log_strength", self.log_strength.clone())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def marginal_cost_map(structure: Structure, names: Sequence[str], deploy_only: bool = False
                      ) -> tuple[np.ndarray, np.ndarray]:
    """``∂C/∂π_j = a_g + Σ_h M_gh s_h`` for a unit of group ``g = names[i]``, ``s_h`` the expected width of gated
    group ``h`` (its fan-in plus bias or BN in its own layer, plus the width of every layer that reads its group)."""
    index = {g: i for i, g in enumerate(names)}
    offsets, matrix = np.zeros(len(names)), np.zeros((len(names), len(names)))
    for layer in structure.layers:
        if deploy_only and not layer.deploy:
            continue
        if layer.out in index:
            row = index[layer.out]
            offsets[row] += 2 if layer.batchnorm else 1
            for g in layer.inputs:
                if g in index:
                    matrix[row, index[g]] += 1
                else:
                    offsets[row] += structure.groups[g]
        width = structure.groups[layer.out] if layer.out is not None else layer.out_dim
        for g in layer.inputs:
            if g in index:
                if layer.out in index:
                    matrix[index[g], index[layer.out]] += 1
                else:
                    offsets[index[g]] += width
    return offsets, matrix


class LossScale(nn.Module):
    """Running scale ``s_k`` of a network's loss (exponential moving average), so that ``α`` does not depend on the
    reward scale or the environment. Starts at the first value it sees.

    :param decay: the moving average's decay per update (config key ``loss_scale_decay``).
    """

    def __init__(self, decay: float = 0.99) -> None:
        super().__init__()
        self.decay = float(decay)
        self.register_buffer("value", torch.tensor(0.0))
        self.register_buffer("count", torch.tensor(0, dtype=torch.long))

    @torch.no_grad()
    def update(self, magnitude: Tensor) -> Tensor:
        """Fold in one value and return the scale. Branch-free (no host read of ``count``), so a CUDA graph can hold
        it; the same arithmetic as ``value = decay·value + (1−decay)·m``, started at the first ``m``."""
        magnitude = magnitude.detach().float().clamp_min(1e-8)
        running = self.value * self.decay + (1 - self.decay) * magnitude
        self.value.copy_(torch.where(self.count == 0, magnitude, running))
        self.count += 1
        return self.value
