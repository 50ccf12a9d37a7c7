"""Online pruning: cut units whose gate stayed at 0 out of every tensor, while training goes on.

Surgery is driven by the :class:`~xinet_rl.structure.Structure`: a unit is a row of its own layer (weight, bias, BN
affine parameters and running statistics, ``π`` and its counter) and one column, at a known offset, of every layer
that reads its group (later DenseNet layers, the state-action block, the auxiliary head, the first layers of actor,
critics and target critics). Adam's moments are sliced the same way and its step counts kept, and every optimizer is
pointed at the new tensors, so the next step on the surviving parameters is exactly the one the unpruned model would
have taken. A DenseNet layer left with no units is removed; an MLP hidden layer keeps at least ``min_units``.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from xinet_rl.structure import Structure, Widths, group_name, in_ofenet

Slicer = Callable[[Tensor], Tensor]


def update_counters(gates: dict[str, nn.Module], eps: float) -> None:
    """One pruning check: count consecutive checks with ``π ≤ eps``; a unit that rose above resets to 0."""
    with torch.no_grad():
        for gate in gates.values():
            at_zero = gate.keep_prob <= eps
            gate.zero_checks.copy_(torch.where(at_zero, gate.zero_checks + 1, torch.zeros_like(gate.zero_checks)))


def units_to_keep(gates: dict[str, nn.Module], patience: int, min_units: int) -> dict[str, Tensor]:
    """Boolean keep-mask per group: the units not at 0 for ``patience`` checks in a row, with the floor of
    :func:`with_min_units`."""
    return with_min_units({group: gate.zero_checks < patience for group, gate in gates.items()}, gates, min_units)


def with_min_units(keep: dict[str, Tensor], gates: dict[str, nn.Module], min_units: int) -> dict[str, Tensor]:
    """``keep`` with every MLP layer given at least ``min_units`` units: those with the largest ``π`` (ties: fewest
    zero checks) join its mask. A DenseNet layer (OFENet's groups) may lose every unit, since its block reads the
    others. The masks of ``keep`` are not changed."""
    out = {}
    for group, mask in keep.items():
        floor = 0 if in_ofenet(group) else min(min_units, mask.numel())
        if int(mask.sum()) < floor:
            gate = gates[group]
            score = gate.keep_prob.detach() * (1 << 20) - gate.zero_checks.float()
            mask = mask.clone()
            mask[torch.topk(score, floor).indices] = True
        out[group] = mask
    return out


def prune(policy, keep: dict[str, Tensor]) -> dict[str, int]:
    """Remove every unit whose ``keep`` entry is False, in place. Returns the units removed per group."""
    removed = {g: int((~m).sum()) for g, m in keep.items() if not bool(m.all())}
    if not removed:
        return {}
    structure: Structure = policy.structure()
    replacements: dict[nn.Parameter, tuple[nn.Parameter, Slicer]] = {}

    def replace(module: nn.Module, name: str, slicer: Slicer) -> None:
        old = getattr(module, name)
        new_value = slicer(old.detach()).clone()
        if isinstance(old, nn.Parameter):
            new = nn.Parameter(new_value, requires_grad=old.requires_grad)
            replacements[old] = (new, slicer)
            setattr(module, name, new)
        else:
            module._buffers[name] = new_value

    full = {g: torch.ones(structure.groups[g], dtype=torch.bool) for g in structure.groups}
    full.update({g: m.cpu() for g, m in keep.items()})
    for layer in structure.layers:
        rows = full[layer.out] if layer.out is not None else None
        cols = torch.cat([full[g] for g in layer.inputs]) if layer.inputs else None
        rows_change = rows is not None and not bool(rows.all())
        cols_change = cols is not None and not bool(cols.all())
        if not (rows_change or cols_change):
            continue
        r = rows.nonzero().squeeze(1) if rows_change else None
        c = cols.nonzero().squeeze(1) if cols_change else None
        modules = policy.layer_modules(layer.name)
        for linear in modules.linears:
            device = linear.weight.device
            rr = r.to(device) if r is not None else None
            cc = c.to(device) if c is not None else None
            replace(linear, "weight", lambda t, rr=rr, cc=cc: _take(_take(t, rr, 0), cc, 1))
            if linear.bias is not None:
                replace(linear, "bias", lambda t, rr=rr: _take(t, rr, 0))
        if rows_change:
            for unit_module in modules.unit_modules:  # BN and gates (online and target)
                idx = r.to(next(iter(unit_module.state_dict().values())).device)
                for name, _ in list(unit_module.named_parameters(recurse=False)):
                    replace(unit_module, name, lambda t, idx=idx: t.index_select(0, idx))
                for name, buf in list(unit_module.named_buffers(recurse=False)):
                    if buf is not None and buf.dim() == 1:
                        replace(unit_module, name, lambda t, idx=idx: t.index_select(0, idx))
    _remap_optimizers(policy.optimizers(), replacements)
    for module in policy.modules():  # keep the modules' own size attributes true to their tensors
        if isinstance(module, nn.Linear):
            module.out_features, module.in_features = module.weight.shape
        elif isinstance(module, nn.BatchNorm1d):
            module.num_features = module.running_mean.shape[0]
    _drop_empty_dense_layers(policy)
    policy.widths = _new_widths(policy.widths, full)
    return removed


def _drop_empty_dense_layers(policy) -> None:
    """Remove DenseNet layers left with no units (and their parameters from every optimizer)."""
    dropped: set[nn.Parameter] = set()
    for block in (policy.ofenet.state, policy.ofenet.state_action):
        for layer in block.layers:
            if layer.linear.out_features == 0:
                dropped.update(layer.parameters())
        block.layers = nn.ModuleList([layer for layer in block.layers if layer.linear.out_features > 0])
    for optimizer in policy.optimizers():
        for group in optimizer.param_groups:
            group["params"] = [q for q in group["params"] if q not in dropped]
        for q in dropped:
            optimizer.state.pop(q, None)


def prune_to_fraction(policy, keep_fraction: float) -> dict[str, int]:
    """Keep the first ``keep_fraction`` of the units of every gated layer (at least one): models of a known smaller
    size for benchmarks."""
    keep = {}
    for group, gate in policy.gates().items():
        mask = torch.zeros(gate.units, dtype=torch.bool)
        mask[: max(1, round(gate.units * keep_fraction))] = True
        keep[group] = mask
    return prune(policy, keep)


def _take(t: Tensor, index: Tensor | None, dim: int) -> Tensor:
    return t if index is None else t.index_select(dim, index)


def _remap_optimizers(optimizers: list[torch.optim.Optimizer],
                      replacements: dict[nn.Parameter, tuple[nn.Parameter, Slicer]]) -> None:
    """Point every optimizer at the new tensors and slice their per-parameter state (Adam moments) alike."""
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            for i, old in enumerate(group["params"]):
                if old not in replacements:
                    continue
                new, slicer = replacements[old]
                group["params"][i] = new
                state = optimizer.state.pop(old, None)
                if state is not None:
                    optimizer.state[new] = {k: (slicer(v).clone() if torch.is_tensor(v) and v.shape == old.shape
                                                else v) for k, v in state.items()}


def _new_widths(widths: Widths, keep: dict[str, Tensor]) -> Widths:
    def block(name: str, sizes: list[int]) -> list[int]:
        kept = [int(keep[group_name(name, i)].sum()) for i in range(len(sizes))]
        return [k for k in kept if k > 0]

    def mlp(name: str, sizes: list[int]) -> list[int]:
        return [int(keep[group_name(name, i)].sum()) for i in range(len(sizes))]

    return Widths(widths.obs_dim, widths.act_dim, widths.aux_dim, block("state", widths.state),
                  block("state_action", widths.state_action), mlp("actor", widths.actor),
                  mlp("critic1", widths.critic1), mlp("critic2", widths.critic2))
