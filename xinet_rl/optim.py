"""``FusedAdam``: torch's fused Adam, stepped without its per-call bookkeeping.

Every gradient update steps three to five optimizers over a dozen small tensors each. ``torch.optim.Adam(fused=True)``
runs one kernel per step, but around it spends about 80 µs per call on the CPU (option checks, regrouping the
tensors by device and dtype) against about 110 µs in the kernel itself for the critics of a HalfCheetah model, and
torch's wrapper around every ``step`` (a profiler range and the step hooks) about 30 µs more.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch import Tensor
from torch.optim import optimizer as torch_optimizer


class FusedAdam(torch.optim.Adam):
    """``torch.optim.Adam(fused=True)`` whose :meth:`step` calls the fused kernel directly in the common case: every
    parameter of a group on one device with one dtype, with a gradient and with state, float hyperparameters, no
    AMSGrad. Same kernel, same arguments, same state and ``state_dict``: the updates are those of Adam's own step bit
    for bit (``tests/test_optim.py``). Anything else (the first step, which creates the state; a closure; a tensor
    learning rate) goes through Adam's own step. torch's per-step wrapper (profiler range, step hooks) is only put
    around the step while a step hook is registered.

    :param params: the parameters, or parameter groups, as for ``torch.optim.Adam``.
    :param lr: the step size.
    :param kwargs: Adam's other arguments (``betas``, ``eps``, ``weight_decay``, ...); ``fused`` is set here.
    """

    def __init__(self, params: Iterable[Tensor] | Iterable[dict[str, Any]], lr: float = 1e-3, **kwargs: Any) -> None:
        super().__init__(params, lr=lr, fused=True, **kwargs)

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        if (self._optimizer_step_pre_hooks or self._optimizer_step_post_hooks
                or torch_optimizer._global_optimizer_pre_hooks or torch_optimizer._global_optimizer_post_hooks):
            return _STEP_WITH_HOOKS(self, closure)
        return _step(self, closure)

    step.hooked = True  # type: ignore[attr-defined]  # tells torch.optim not to wrap it (done above when needed)

    def _fast_lists(self, group: dict[str, Any]) -> tuple[list[Tensor], ...] | None:
        """The kernel's tensor lists for one group, or ``None`` where Adam's own step must run."""
        beta1, beta2 = group["betas"]
        if (group["amsgrad"] or group["differentiable"] or isinstance(group["lr"], Tensor)
                or isinstance(beta1, Tensor) or isinstance(beta2, Tensor)):
            return None
        params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
        for param in group["params"]:
            grad, state = param.grad, self.state.get(param)
            if grad is None:  # skipped, as Adam's own step skips it (gates with no loss gradient this step)
                continue
            if not state or grad.is_sparse:
                return None
            params.append(param)
            grads.append(grad)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            steps.append(state["step"])
        if params and any(p.device != params[0].device or p.dtype != params[0].dtype for p in params):
            return None
        return params, grads, exp_avgs, exp_avg_sqs, steps

    def _advance(self, params: list[Tensor], steps: list[Tensor]) -> list[Tensor]:
        """Add 1 to the step counters of ``params`` and return the counters. They live as views of one tensor, so one
        ``add_`` advances them all (``_foreach_add_`` over a dozen 0-dim counters cost about 40 µs per step on the
        CPU, a third of the critics' Adam step): counters that are all separate tensors (as Adam or
        ``load_state_dict`` made them) are joined first, values unchanged; a subset of joined counters (the gates
        that have a gradient this step) is advanced per tensor, and never remade (not inside a CUDA graph)."""
        base = steps[0]._base
        if base is None and all(s._base is None for s in steps):
            steps = list(torch.stack(steps).unbind())
            for param, step in zip(params, steps):
                self.state[param]["step"] = step
            base = steps[0]._base
        if (base is not None and base.dim() == 1 and base.shape[0] == len(steps)
                and all(s._base is base and s.storage_offset() == i for i, s in enumerate(steps))):
            base.add_(1)
        else:
            torch._foreach_add_(steps, 1)
        return steps


@torch.no_grad()
def _step(optimizer: FusedAdam, closure: Callable[[], float] | None = None) -> float | None:
    groups = None if closure is not None else [optimizer._fast_lists(group) for group in optimizer.param_groups]
    if groups is None or any(lists is None for lists in groups):
        return _adam_step(optimizer, closure)
    for group, (params, grads, exp_avgs, exp_avg_sqs, steps) in zip(optimizer.param_groups, groups):
        if not params:
            continue
        beta1, beta2 = group["betas"]
        steps = optimizer._advance(params, steps)
        kernel = torch._fused_adamw_ if group.get("decoupled_weight_decay") else torch._fused_adam_
        kernel(params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, lr=group["lr"], beta1=beta1,
               beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"], maximize=group["maximize"],
               grad_scale=None, found_inf=None)
    return None


def _adam_step(optimizer: FusedAdam, closure: Callable[[], float] | None) -> float | None:
    """Adam's own step without torch's wrapper (which building a plain ``Adam`` anywhere in the process puts on it)."""
    adam_step = torch.optim.Adam.step
    if getattr(adam_step, "hooked", False):
        adam_step = adam_step.__wrapped__  # type: ignore[attr-defined]
    return adam_step(optimizer, closure)


_STEP_WITH_HOOKS = torch.optim.Optimizer.profile_hook_step(_step)

__all__ = ["FusedAdam"]
