"""Bernoulli unit gates and the estimators of the gradient of the expected loss with respect to ``π``.

Every gated unit ``j`` is multiplied by ``ξ_j ~ Bernoulli(π_j)``. A network's own loss is evaluated with a fresh mask
per sample (``sample`` mode, recorded on a :class:`MaskTape`); every other use (acting, targets, features handed to
another network) uses ``ξ = π`` (``mean`` mode, no tape). ``π`` never receives gradient through a forward pass: its
gradient comes from :func:`estimate_keep_prob_grad` (the loss part) and from the cost model (the regularizer part),
and the update is projected onto ``[0, 1]``. In code ``π`` is ``keep_prob``.
"""

from __future__ import annotations

from typing import Callable, Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn

MaskRandomness = Union[torch.Generator, np.random.BitGenerator, None]
"""Where masks draw their random numbers: a torch generator on the masks' device, or a numpy bit generator (faster
on the CPU, see :func:`bernoulli_masks`)."""


class Gate(nn.Module):
    """The keep probabilities ``π`` of one layer's units (``keep_prob``, named apart from SAC's policy ``π``), and for
    each unit the number of consecutive pruning checks at which it was at 0 (the pruner's counter, saved with the
    model).

    :param units: the layer's number of units.
    :param gate_init: every unit's initial keep probability, in ``[0, 1]``.
    """

    def __init__(self, units: int, gate_init: float = 1.0) -> None:
        super().__init__()
        self.keep_prob = nn.Parameter(torch.full((units,), float(gate_init)))
        self.register_buffer("zero_checks", torch.zeros(units, dtype=torch.long))

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        # model files and checkpoints written before the rename call the keep probabilities ``pi``
        if prefix + "pi" in state_dict and prefix + "keep_prob" not in state_dict:
            state_dict[prefix + "keep_prob"] = state_dict.pop(prefix + "pi")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def units(self) -> int:
        return self.keep_prob.shape[0]

    def forward(self, h: Tensor, tape: "MaskTape | None" = None) -> Tensor:
        """Mean mode (``tape is None``): ``h * π``. Sample mode: ``h * ξ`` with ``ξ`` drawn (or replayed) by the tape."""
        return h * self.factor(h.shape[0], tape)

    def factor(self, batch: int, tape: "MaskTape | None" = None) -> Tensor:
        """What the layer's units are multiplied by: ``π`` (mean mode, no gradient) or the tape's ``batch x units``
        mask ``ξ`` (which requires grad when the ``π`` estimator needs ``∂L/∂ξ``)."""
        return self.keep_prob.detach() if tape is None else tape.draw(self.keep_prob, batch)

    def apply_(self, h: Tensor, tape: "MaskTape | None" = None) -> Tensor:
        """``forward`` in place on ``h`` where autograd allows it: only when no ``∂L/∂ξ`` is wanted (that needs the
        unmasked ``h``) and ``h`` is not saved for a backward pass. Saves a fresh ``batch x units`` tensor per layer:
        elementwise work in an update is bound by memory traffic, not arithmetic."""
        factor = self.factor(h.shape[0], tape)
        return h * factor if factor.requires_grad else h.mul_(factor)

    @torch.no_grad()
    def project_(self) -> None:
        """Projected gradient descent: keep ``π`` in ``[0, 1]`` after every step."""
        self.keep_prob.clamp_(0.0, 1.0)

    def extra_repr(self) -> str:
        return f"units={self.units}"


class MaskTape:
    """Draws the per-sample masks of one sample-mode forward pass and keeps them, in forward order.

    With ``replay`` the tape hands out the given masks instead (brute-force checks, the flip pass of the actor
    estimator). Sampled masks are leaf tensors that require grad, so autograd returns per-sample ``∂ℓ_b/∂ξ_bj``.

    :param replay: masks to hand out, one per gated layer in forward order, instead of drawing them.
    :param generator: where drawn masks take their random numbers (:data:`MaskRandomness`).
    """

    def __init__(self, replay: Sequence[Tensor] | None = None, generator: MaskRandomness = None) -> None:
        self.masks: list[Tensor] = []
        self._replay = replay
        self._generator = generator

    @classmethod
    def draw_all(cls, keep_probs: Sequence[Tensor], batch: int, generator: MaskRandomness = None,
                 requires_grad: bool = True) -> "MaskTape":
        """A tape whose masks for the given gates (in forward order) are drawn in one Bernoulli call: one
        ``batch x Σ units`` leaf tensor, handed out per layer as views (a few operator calls instead of a few per
        layer; autograd returns the per-layer gradients as before). ``requires_grad=False`` where no ``π`` gradient
        is wanted: the weights still train through the sampled masks, and backward skips ``∂L/∂ξ``."""
        if not keep_probs:
            return cls(replay=[])
        with torch.no_grad():
            joint = bernoulli_masks(torch.cat(list(keep_probs)), batch, generator).requires_grad_(requires_grad)
        return cls(replay=list(joint.split([keep_prob.shape[0] for keep_prob in keep_probs], dim=1)))

    def split(self, counts: Sequence[int]) -> list["MaskTape"]:
        """Tapes that replay consecutive runs of this tape's pre-drawn masks (one tape per network)."""
        assert self._replay is not None and sum(counts) == len(self._replay), "split needs a fully pre-drawn tape"
        tapes, start = [], 0
        for count in counts:
            tapes.append(MaskTape(replay=self._replay[start:start + count]))
            start += count
        return tapes

    def draw(self, keep_prob: Tensor, batch: int) -> Tensor:
        if self._replay is not None:
            mask = self._replay[len(self.masks)]
            if mask.shape != (batch, keep_prob.shape[0]):
                raise ValueError(f"mask {len(self.masks)} has shape {tuple(mask.shape)}, the layer needs "
                                 f"{(batch, keep_prob.shape[0])}")
        else:
            mask = bernoulli_masks(keep_prob, batch, self._generator).requires_grad_(True)
        self.masks.append(mask)
        return mask


def bernoulli_masks(keep_prob: Tensor, batch: int, generator: MaskRandomness = None) -> Tensor:
    """``batch`` rows of ``ξ_j ~ Bernoulli(π_j)`` as a float tensor, ``1[u < π_j]`` with ``u`` uniform on a grid of
    ``2^-24`` (the resolution of a float32 ``torch.rand``). ``π = 1`` gives 1 and ``π = 0`` gives 0 exactly.

    Not ``torch.bernoulli``: its CPU kernel draws element by element, 3x as slow as ``rand`` plus a comparison. On the
    CPU with a numpy bit generator the uniforms come from raw 64-bit words (two 24-bit draws each), compared as
    integers with ``round(π 2^24)``: less than half the time of torch's CPU ``rand``, which generated about 2 ms of
    the 2,016 x 256 masks of each HalfCheetah update (``docs/method.md``)."""
    if isinstance(generator, np.random.BitGenerator) and keep_prob.device.type == "cpu":
        return _masks_from_bits(keep_prob, batch, generator)
    u = torch.rand(batch, keep_prob.shape[0], generator=generator, device=keep_prob.device, dtype=keep_prob.dtype)
    return u.lt_(keep_prob.detach())


_GRID = 1 << 24  # uniforms on a grid of 2^-24, the resolution of a float32 torch.rand


def _masks_from_bits(keep_prob: Tensor, batch: int, bits: np.random.BitGenerator) -> Tensor:
    units = keep_prob.shape[0]
    count = batch * units
    words = bits.random_raw((count + 1) // 2).view(np.int32)[:count]  # two 32-bit halves of each 64-bit word
    uniform = torch.from_numpy(words).view(batch, units).bitwise_and_(_GRID - 1)  # 24 random bits: 0 <= u < 2^24
    threshold = torch.round(keep_prob.detach().to(torch.float64) * _GRID).to(torch.int32)  # P(u < t) = t / 2^24
    return torch.lt(uniform, threshold, out=torch.empty(batch, units, dtype=keep_prob.dtype))


def _detached_cat(tensors: Sequence[Tensor]) -> Tensor:
    with torch.no_grad():
        return torch.cat(list(tensors), 1)


def straight_through(masks: Sequence[Tensor], mask_grads: Sequence[Tensor]) -> list[Tensor]:
    """Batch sum of ``∂L/∂ξ_bj`` (``L`` a batch mean): the straight-through estimate. Kept for comparison only:
    it gives a useful unit no "keep me" signal at a stationary point (METHOD.md section 2)."""
    return [g.sum(0) for g in mask_grads]


def curvature_corrected(
    masks: Sequence[Tensor],
    mask_grads: Sequence[Tensor],
    outputs: Tensor,
    gn_coef: float,
    generator: torch.Generator | None = None,
    probe: bool = True,
) -> list[Tensor]:
    """Curvature-corrected difference ``mean_b [g_bj + (1/2 - ξ_bj) h_bj]`` for a squared-error loss on ``outputs``.

    ``g_bj = B ∂L/∂ξ_bj``; ``h_bj = B ∂²L/∂ξ_bj²`` in its Gauss-Newton form ``gn_coef · ||∂f/∂ξ_bj||²``, where
    ``gn_coef`` is ``B`` times the (constant) second derivative of ``L`` with respect to one output element. For a
    vector output the squared Jacobian column is a Hutchinson estimate with one Rademacher probe per sample, which
    keeps cross-sample effects (BatchNorm in train mode) in the estimate. With ``probe=False`` the output elements
    must depend on disjoint sets of masks (the two critics stacked), so one plain sum gives every Jacobian column
    exactly. ``outputs`` must still have its graph.
    """
    if not masks:  # every gated layer of this network was pruned away
        return []
    if probe and outputs.dim() > 1 and outputs.shape[-1] > 1:
        signs = torch.randint(0, 2, outputs.shape, generator=generator, device=outputs.device).to(outputs.dtype) * 2 - 1
        projected = (outputs * signs).sum()
    else:
        projected = outputs.sum()
    jac = torch.autograd.grad(projected, list(masks))
    # All layers at once (one concatenated tensor), then split back per layer.
    g, m, j = torch.cat(list(mask_grads), 1), _detached_cat(masks), torch.cat(jac, 1)
    joint = (g * m.shape[0] + (0.5 - m) * (gn_coef * j.square())).mean(0)
    return list(joint.split([x.shape[1] for x in masks]))


def flip_difference(
    masks: Sequence[Tensor],
    mask_grads: Sequence[Tensor],
    per_sample_loss: Tensor,
    loss_with_masks: Callable[[list[Tensor]], Tensor],
    generator: torch.Generator | None = None,
) -> list[Tensor]:
    """Flip-sampled exact difference with the straight-through term as control variate (for losses with no
    Gauss-Newton form, such as the actor's).

    Each sample flips one uniformly chosen gated unit; one extra forward pass gives the exact per-sample difference
    ``Δ_b = ℓ_b(ξ_j=1) − ℓ_b(ξ_j=0)`` for that unit. The estimate ``mean_b g_bj + N·mean_b 1[j_b=j](Δ_b − g_bj)`` is
    unbiased for ``E[L(ξ_j=1) − L(ξ_j=0)]``; ``per_sample_loss`` must be ``ℓ_b`` with ``L = mean_b ℓ_b``, and
    ``loss_with_masks`` must recompute ``ℓ_b`` with the same noise for given masks.
    """
    if not masks:
        return []
    sizes = [m.shape[1] for m in masks]
    base = _detached_cat(masks)  # every layer's mask side by side: one flip per row
    batch, total = base.shape
    choice = torch.randint(0, total, (batch,), generator=generator, device=base.device)
    onehot = torch.zeros_like(base).scatter_(1, choice[:, None], 1.0)
    sign = 1.0 - 2.0 * base  # +1 where the sampled ξ is 0, −1 where it is 1
    with torch.no_grad():
        flipped_loss = loss_with_masks(list((base + onehot * sign).split(sizes, 1)))
        change = flipped_loss - per_sample_loss.detach()  # ℓ(flipped) − ℓ(sampled)
    g_b = torch.cat(list(mask_grads), 1) * batch
    # Δ_b = ℓ(1) − ℓ(0): flipping 1→0 changes the loss by −Δ_b, flipping 0→1 by +Δ_b.
    delta = change[:, None] * sign
    joint = g_b.mean(0) + total * (onehot * (delta - g_b)).mean(0)
    return list(joint.split(sizes))
