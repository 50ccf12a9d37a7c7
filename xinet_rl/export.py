"""The deployable policy (state block + actor, deterministic action in the environment's units) as a standalone
module, exported to ONNX or TorchScript and checked against PyTorch at export time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

FORMATS = ("onnx", "torchscript")
TOLERANCE = 1e-5


class DeployPolicy(nn.Module):
    """``obs -> action`` as a plain MLP-DenseNet of the policy's live widths: OFENet's state block (BN on running
    statistics, gates at their mean ``π``), the actor's trunk and mean head, tanh, and the rescaling from [-1, 1] to
    the action box, folded into linear layers so that a pruned policy costs what a dense one of its widths costs.

    BN becomes each layer's weight and bias (``W' = W γ/√(var+ε)``, ``b' = β − mean γ/√(var+ε)``). A gate cannot go
    into its own layer (SiLU is not positively homogeneous) but every reader of a unit is linear in it, so ``π_j``
    scales the columns that read unit ``j`` (later DenseNet layers, the actor's first layer; for an actor unit, the
    next layer or the mean head): no multiply is left, and a unit with ``π = 0`` is not computed at all. A snapshot:
    later training does not change it.

    :param policy: an :class:`~xinet_rl.policy.XiPolicy` (gated or not, pruned or not).
    """

    def __init__(self, policy) -> None:
        super().__init__()
        like = policy.actor.mu.weight
        obs_dim = policy.widths.obs_dim
        keep = [torch.ones(obs_dim, dtype=torch.bool)]  # per column of z_s: computed at all
        scale = [torch.ones(obs_dim, dtype=torch.float64)]  # and what its reader multiplies it by (its π)
        state = []
        for layer in policy.ofenet.state.layers:
            weight, bias = _fold_batchnorm(layer.linear, layer.bn)
            keep_prob = _gate_mean(layer.gate, weight.shape[0])
            alive = keep_prob > 0
            if bool(alive.any()):
                state.append(_linear(_read(weight[alive], torch.cat(keep), torch.cat(scale)), bias[alive], like))
            keep.append(alive)
            scale.append(keep_prob)
        self.state = nn.ModuleList(state)
        cols, col_scale = torch.cat(keep), torch.cat(scale)
        trunk, gates = [], policy.actor.trunk.gates
        for i, linear in enumerate(policy.actor.trunk.linears):
            weight, bias = _f64(linear.weight), _f64(linear.bias)
            keep_prob = _gate_mean(gates[i] if len(gates) else None, weight.shape[0])
            alive = keep_prob > 0
            if not bool(alive.any()):  # the next layer reads zeros: keep one unit (its columns get π = 0) as an MLP
                alive[0] = True
            trunk.append(_linear(_read(weight[alive], cols, col_scale), bias[alive], like))
            cols, col_scale = alive, keep_prob
        self.trunk = nn.ModuleList(trunk)
        self.mu = _linear(_read(_f64(policy.actor.mu.weight), cols, col_scale), _f64(policy.actor.mu.bias), like)
        low = torch.as_tensor(policy.action_space.low, dtype=torch.float64)
        high = torch.as_tensor(policy.action_space.high, dtype=torch.float64)
        # low + (a + 1)/2 · (high − low) = center + a · half_span: one multiply-add after the tanh
        self.register_buffer("center", ((low + high) / 2).to(like))
        self.register_buffer("half_span", ((high - low) / 2).to(like))
        self.requires_grad_(False).eval()

    def forward(self, obs: Tensor) -> Tensor:
        x = obs
        for layer in self.state:
            x = torch.cat([x, F.silu(layer(x))], dim=-1)
        for layer in self.trunk:
            x = F.relu(layer(x))
        return self.center + self.half_span * torch.tanh(self.mu(x))


def _f64(t: Tensor) -> Tensor:
    """Folding is done in float64 on the CPU, so that the folded float32 weights round once."""
    return t.detach().to("cpu", torch.float64)


def _gate_mean(gate: nn.Module | None, units: int) -> Tensor:
    """``π`` of a layer's units (1 for an ungated layer)."""
    return torch.ones(units, dtype=torch.float64) if gate is None else _f64(gate.keep_prob)


def _fold_batchnorm(linear: nn.Linear, bn: nn.BatchNorm1d) -> tuple[Tensor, Tensor]:
    """``BN(W x + b)`` on running statistics as one ``W' x + b'``."""
    mean, var = _f64(bn.running_mean), _f64(bn.running_var)
    gamma = _f64(bn.weight) if bn.weight is not None else torch.ones_like(mean)
    bn_shift = _f64(bn.bias) if bn.bias is not None else torch.zeros_like(mean)
    factor = gamma / torch.sqrt(var + bn.eps)
    shift = _f64(linear.bias) - mean if linear.bias is not None else -mean
    return _f64(linear.weight) * factor[:, None], bn_shift + shift * factor


def _read(weight: Tensor, keep: Tensor, scale: Tensor) -> Tensor:
    """The columns of ``weight`` that read computed units, each times its unit's ``π``."""
    return weight[:, keep] * scale[keep]


def _linear(weight: Tensor, bias: Tensor, like: Tensor) -> nn.Linear:
    """A plain linear layer holding the folded weights, on ``like``'s device and in its dtype."""
    layer = nn.Linear(weight.shape[1], weight.shape[0], device=like.device, dtype=like.dtype)
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    return layer


def export_policy(model, fmt: str, out: str | Path, samples: int = 256, seed: int = 0) -> float:
    """Write the deployable policy of ``model`` to ``out`` and return the largest absolute difference between the
    exported file and PyTorch on random observations (raises if it exceeds ``TOLERANCE``)."""
    deploy = DeployPolicy(model.policy).cpu()
    obs_dim = int(np.prod(model.observation_space.shape))
    obs = torch.randn(samples, obs_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = deploy(obs).numpy()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "onnx":
        torch.onnx.export(deploy, (obs[:1],), str(out), input_names=["obs"], output_names=["action"],
                          dynamic_axes={"obs": {0: "batch"}, "action": {0: "batch"}}, dynamo=False)
        got = run_onnx(out, obs.numpy())
    elif fmt == "torchscript":
        with torch.no_grad():
            traced = torch.jit.trace(deploy, (obs[:1],))
        traced.save(str(out))
        with torch.no_grad():
            got = torch.jit.load(str(out))(obs).numpy()
    else:
        raise ValueError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    diff = float(np.abs(got - expected).max())
    if diff > TOLERANCE:
        raise RuntimeError(f"exported policy differs from PyTorch by {diff:.3g} (> {TOLERANCE})")
    return diff


def run_onnx(path: str | Path, obs: np.ndarray) -> np.ndarray:
    """Actions from an exported ONNX file with onnxruntime alone (no torch, no xinet_rl needed)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["action"], {"obs": np.asarray(obs, dtype=np.float32)})[0]
