"""Gated OFENet: two MLP-DenseNet blocks (state, state-action) and the auxiliary next-observation head.

Layer ``l`` of a block computes ``h_l = ξ_l ⊙ swish(BN(W_l x_{l-1}))`` and appends it: ``x_l = [x_{l-1}, h_l]``.
BatchNorm uses the Keras defaults of the original (PyTorch ``momentum=0.01, eps=1e-3``). The module is kept in eval
mode (running statistics) except inside the auxiliary update, which switches it to train mode itself
(:meth:`OFENet.aux_mode`): acting and the RL losses never touch the BN statistics.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xinet_rl.gates import Gate, MaskTape
from xinet_rl.structure import AUX_HEAD, STATE, STATE_ACTION, Structure

BN_MOMENTUM, BN_EPS = 0.01, 1e-3


class DenseLayer(nn.Module):
    """One DenseNet layer: ``ξ ⊙ swish(BN(W x))``, which its block appends to its input.

    :param in_dim: the width of the input (the block's input and every earlier layer's units).
    :param units: the layer's number of units.
    :param gated: whether the units carry a :class:`~xinet_rl.gates.Gate`.
    :param gate_init: the gates' initial keep probability.
    """

    def __init__(self, in_dim: int, units: int, gated: bool, gate_init: float) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, units, bias=False)  # BN's shift makes a bias redundant (docs/method.md)
        self.bn = nn.BatchNorm1d(units, momentum=BN_MOMENTUM, eps=BN_EPS)
        self.gate = Gate(units, gate_init) if gated else None

    def forward(self, x: Tensor, tape: MaskTape | None = None) -> Tensor:
        h = F.silu(self.bn(self.linear(x)))  # SiLU's backward reads its input, not h: h may be masked in place
        return h if self.gate is None else self.gate.apply_(h, tape)


class DenseBlock(nn.Module):
    """MLP-DenseNet block: the output is the input followed by every layer's (gated) units.

    :param shapes: ``(input width, units)`` of every layer, in order, as the
        :class:`~xinet_rl.structure.Structure` gives them (:meth:`OFENet.from_structure`).
    :param gated: whether the units carry gates.
    :param gate_init: the gates' initial keep probability.
    """

    def __init__(self, shapes: Sequence[tuple[int, int]], gated: bool, gate_init: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList([DenseLayer(in_dim, units, gated, gate_init) for in_dim, units in shapes])

    def forward(self, x: Tensor, tape: MaskTape | None = None) -> Tensor:
        for layer in self.layers:
            x = torch.cat([x, layer(x, tape)], dim=-1)
        return x


class OFENet(nn.Module):
    """The feature extractor: ``z_s`` from the state block, ``z_sa`` from the state-action block on ``[z_s, a]``,
    and the auxiliary head that predicts the next observation from ``z_sa``.

    :param state: the state block (reads the observation).
    :param state_action: the state-action block (reads ``z_s`` and the action).
    :param aux_head: the auxiliary head, or ``None`` for a model without OFENet (the plain-SAC composition: no
        DenseNet layers, features are the raw observation and action, nothing to pre-train).
    """

    def __init__(self, state: DenseBlock, state_action: DenseBlock, aux_head: nn.Linear | None) -> None:
        super().__init__()
        self.state = state
        self.state_action = state_action
        self.aux_head = aux_head
        self.eval()

    @classmethod
    def from_structure(cls, structure: Structure, gated: bool, gate_init: float = 1.0) -> "OFENet":
        """OFENet as ``structure`` describes it: every layer's input width is the sum of the groups it reads."""
        def block(name: str) -> DenseBlock:
            shapes = [(structure.in_dim(layer.name), layer.out_dim) for layer in structure.hidden_layers(name)]
            return DenseBlock(shapes, gated, gate_init)

        state, state_action = block(STATE), block(STATE_ACTION)
        aux = structure.layer(AUX_HEAD) if structure.has_layer(AUX_HEAD) else None
        return cls(state, state_action, None if aux is None else nn.Linear(structure.in_dim(AUX_HEAD), aux.out_dim))

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
