"""Gated actor and critic MLPs (ReLU, every hidden unit gated) on OFENet's features."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xinet_rl.gates import Gate, MaskTape
from xinet_rl.structure import ACT, ACTOR, Structure

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


class GatedMLP(nn.Module):
    """Hidden layers ``h_i = ξ_i ⊙ relu(W_i h_{i-1} + b_i)``; returns the last hidden layer.

    :param in_dim: the input width.
    :param widths: every hidden layer's number of units.
    :param gated: whether the units carry gates.
    :param gate_init: the gates' initial keep probability.
    """

    def __init__(self, in_dim: int, widths: list[int], gated: bool, gate_init: float) -> None:
        super().__init__()
        self.linears = nn.ModuleList()
        self.gates = nn.ModuleList()
        for units in widths:
            self.linears.append(nn.Linear(in_dim, units))
            if gated:
                self.gates.append(Gate(units, gate_init))
            in_dim = units

    def forward(self, x: Tensor, tape: MaskTape | None = None) -> Tensor:
        for i, linear in enumerate(self.linears):
            z = linear(x)  # a fresh product no backward pass reads: ReLU and a gradient-free mask go in place
            if not len(self.gates):
                x = F.relu(z, inplace=True)
                continue
            factor = self.gates[i].factor(z.shape[0], tape)
            if factor.requires_grad:  # ∂L/∂ξ = ∂L/∂h · relu(z), also where ξ = 0: mask after the ReLU
                x = F.relu(z, inplace=True) * factor
            elif tape is None:  # mean mode: relu(z)·π = relu(z·π) for π ≥ 0, with the same gradient for z
                x = F.relu(z.mul_(factor), inplace=True)
            else:  # a 0/1 mask: ∂relu(z·ξ)/∂z = ξ·1[zξ > 0] = 1[relu(zξ) > 0], which ReLU's backward computes on
                with torch.no_grad():  # its own, so autograd need not see (nor multiply back by) the mask. The
                    z.mul_(factor)  # linear's backward does not read z.
                x = F.relu(z, inplace=True)
        return x


class Actor(nn.Module):
    """Tanh-squashed Gaussian policy on ``z_s``.

    :param in_dim: the width of ``z_s``.
    :param widths: the hidden layers' numbers of units.
    :param act_dim: the action's dimension.
    :param gated: whether the hidden units carry gates.
    :param gate_init: the gates' initial keep probability.
    """

    def __init__(self, in_dim: int, widths: list[int], act_dim: int, gated: bool, gate_init: float) -> None:
        super().__init__()
        self.trunk = GatedMLP(in_dim, widths, gated, gate_init)
        self.mu = nn.Linear(widths[-1], act_dim)
        self.log_std = nn.Linear(widths[-1], act_dim)

    @classmethod
    def from_structure(cls, structure: Structure, gated: bool, gate_init: float = 1.0) -> "Actor":
        """The actor as ``structure`` describes it (its input width is that of the groups its first layer reads)."""
        hidden = structure.hidden_layers(ACTOR)
        return cls(structure.in_dim(hidden[0].name), [layer.out_dim for layer in hidden], structure.groups[ACT],
                   gated, gate_init)

    def distribution(self, z_s: Tensor, tape: MaskTape | None = None) -> tuple[Tensor, Tensor]:
        h = self.trunk(z_s, tape)
        return self.mu(h), self.log_std(h).clamp(LOG_STD_MIN, LOG_STD_MAX)

    def act(self, z_s: Tensor) -> Tensor:
        """A sampled action, as :meth:`sample` draws it, without the log-probability that acting does not need
        (about half the cost of a batch-1 call)."""
        mu, log_std = self.distribution(z_s)
        return torch.tanh(mu + torch.randn_like(mu) * log_std.exp())

    def deterministic(self, z_s: Tensor) -> Tensor:
        return torch.tanh(self.mu(self.trunk(z_s)))

    def sample(self, z_s: Tensor, tape: MaskTape | None = None, noise: Tensor | None = None
               ) -> tuple[Tensor, Tensor, Tensor]:
        """Reparameterised action in ``[-1, 1]``, its log-probability, and the Gaussian noise used (to replay it)."""
        mu, log_std = self.distribution(z_s, tape)
        if noise is None:
            noise = torch.randn_like(mu)
        u = mu + noise * log_std.exp()
        # log N(u; mu, std) - log|det d tanh(u)/du|, the latter in the stable form 2(log 2 - u - softplus(-2u)).
        log_prob = (-0.5 * noise.square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prob = log_prob - (2 * (math.log(2.0) - u - F.softplus(-2 * u))).sum(-1)
        return torch.tanh(u), log_prob, noise


class Critic(nn.Module):
    """``Q(s, a)`` on ``z_sa`` (which already contains the action).

    :param in_dim: the width of ``z_sa``.
    :param widths: the hidden layers' numbers of units.
    :param gated: whether the hidden units carry gates.
    :param gate_init: the gates' initial keep probability.
    """

    def __init__(self, in_dim: int, widths: list[int], gated: bool, gate_init: float) -> None:
        super().__init__()
        self.trunk = GatedMLP(in_dim, widths, gated, gate_init)
        self.out = nn.Linear(widths[-1], 1)

    @classmethod
    def from_structure(cls, structure: Structure, name: str, gated: bool, gate_init: float = 1.0) -> "Critic":
        """Critic ``name`` (``critic1`` or ``critic2``) as ``structure`` describes it."""
        hidden = structure.hidden_layers(name)
        return cls(structure.in_dim(hidden[0].name), [layer.out_dim for layer in hidden], gated, gate_init)

    def forward(self, z_sa: Tensor, tape: MaskTape | None = None) -> Tensor:
        return self.out(self.trunk(z_sa, tape)).squeeze(-1)
