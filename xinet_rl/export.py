"""The deployable policy (state block + actor, deterministic action in the environment's units) as a standalone
module, exported to ONNX or TorchScript and checked against PyTorch at export time."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

FORMATS = ("onnx", "torchscript")
TOLERANCE = 1e-5


class DeployPolicy(nn.Module):
    """``obs -> action``: OFENet's state block (BN on running statistics, gates at their mean ``π``), the actor's
    trunk and mean head, tanh, and the rescaling from [-1, 1] to the action box."""

    def __init__(self, policy) -> None:
        super().__init__()
        self.state = copy.deepcopy(policy.ofenet.state).eval()
        self.trunk = copy.deepcopy(policy.actor.trunk).eval()
        self.mu = copy.deepcopy(policy.actor.mu).eval()
        low, high = policy.action_space.low, policy.action_space.high
        self.register_buffer("low", torch.as_tensor(low, dtype=torch.float32))
        self.register_buffer("span", torch.as_tensor(high - low, dtype=torch.float32))

    def forward(self, obs: Tensor) -> Tensor:
        action = torch.tanh(self.mu(self.trunk(self.state(obs))))
        return self.low + 0.5 * (action + 1.0) * self.span


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
