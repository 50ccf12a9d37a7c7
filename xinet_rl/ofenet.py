"""Gated OFENet: two MLP-DenseNet blocks (state, state-action) and the auxiliary next-observation head.

Layer ``l`` of a block computes ``h_l = ξ_l ⊙ swish(BN(W_l x_{l-1}))`` and appends it: ``x_l = [x_{l-1}, h_l]``.
BatchNorm uses the Keras defaults of the original (PyTorch ``momentum=0.01, eps=1e-3``). The module is kept in eval
mode (running statistics) except inside the auxiliary update, which switches it to train mode itself
(:meth:`OFENet.aux_mode`): acting and the RL losses never touch the BN statistics.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xinet_rl.gates import Gate, MaskTape

BN_MOMENTUM, BN_EPS = 0.01, 1e-3


class DenseLayer(nn.Module):
    def __init__(self, in_dim: int, units: int, gated: bool, pi_init: float) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, units, bias=False)  # BN's shift makes a bias redundant (docs/method.md)
        self.bn = nn.BatchNorm1d(units, momentum=BN_MOMENTUM, eps=BN_EPS)
        self.gate = Gate(units, pi_init) if gated else None

    def forward(self, x: Tensor, tape: MaskTape | None = None) -> Tensor:
        h = F.silu(self.bn(self.linear(x)))  # SiLU's backward reads its input, not h: h may be masked in place
        return h if self.gate is None else self.gate.apply_(h, tape)


class DenseBlock(nn.Module):
    """MLP-DenseNet block: the output is the input followed by every layer's (gated) units."""

    def __init__(self, in_dim: int, widths: list[int], gated: bool, pi_init: float) -> None:
        super().__init__()
        layers = []
        for units in widths:
            layers.append(DenseLayer(in_dim, units, gated, pi_init))
            in_dim += units
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor, tape: MaskTape | None = None) -> Tensor:
        for layer in self.layers:
            x = torch.cat([x, layer(x, tape)], dim=-1)
        return x


class OFENet(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, state_widths: list[int], state_action_widths: list[int],
                 aux_dim: int, gated: bool = True, pi_init: float = 1.0) -> None:
        super().__init__()
        z_s_dim = obs_dim + sum(state_widths)
        self.state = DenseBlock(obs_dim, state_widths, gated, pi_init)
        self.state_action = DenseBlock(z_s_dim + act_dim, state_action_widths, gated, pi_init)
        # aux_dim 0: no OFENet at all (the plain-SAC baseline), features are the raw observation and action.
        self.aux_head = nn.Linear(z_s_dim + act_dim + sum(state_action_widths), aux_dim) if aux_dim > 0 else None
        self.eval()

    def z_s(self, obs: Tensor, tape: MaskTape | None = None) -> Tensor:
        return self.state(obs, tape)

    def z_sa(self, z_s: Tensor, action: Tensor, tape: MaskTape | None = None) -> Tensor:
        return self.state_action(torch.cat([z_s, action], dim=-1), tape)

    def forward(self, obs: Tensor, action: Tensor, tape: MaskTape | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """``(z_s, z_sa, predicted next observation)``."""
        z_s = self.z_s(obs, tape)
        z_sa = self.z_sa(z_s, action, tape)
        assert self.aux_head is not None, "this model has no OFENet auxiliary head"
        return z_s, z_sa, self.aux_head(z_sa)

    def train(self, mode: bool = True) -> "OFENet":
        """BN stays on running statistics whatever the mode (only :meth:`aux_mode` switches it), so that no
        ``.train()`` call on an enclosing module can make acting or the RL losses move the BN statistics."""
        super().train(mode)
        for block in (self.state, self.state_action):
            for layer in block.layers:
                layer.bn.training = False
        return self

    @contextmanager
    def aux_mode(self) -> Iterator[None]:
        """BatchNorm on batch statistics (and updating its running statistics) for the auxiliary update only.
        (Only BN depends on the mode, so only the BN flags are switched: cheaper than ``train()`` on the tree.)"""
        norms = [layer.bn for block in (self.state, self.state_action) for layer in block.layers]
        for bn in norms:
            bn.training = True
        try:
            yield
        finally:
            for bn in norms:
                bn.training = False
