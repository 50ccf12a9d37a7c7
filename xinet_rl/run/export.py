"""A saved policy's deployable part (pruned state block and actor, deterministic action) written as a standalone
ONNX or TorchScript file next to its model (or where asked), checked against PyTorch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from xinet_rl.agents.xisac import XiSAC
from xinet_rl.export import export_policy
from xinet_rl.run.errors import UsageError
from xinet_rl.run.paths import resolve_model_path

SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}


@dataclass
class ExportResult:
    """What :func:`export_saved` wrote.

    :param out: the file
    :param obs_dim: size of the input ``obs`` (after the batch dimension)
    :param action_dim: size of the output ``action``
    :param max_diff: max |exported - PyTorch| on random observations
    """

    out: Path
    obs_dim: int
    action_dim: int
    max_diff: float


def export_saved(path: Path, fmt: str, out: str | Path | None = None) -> ExportResult:
    """Export the deployable policy of a saved XiSAC model.

    :param path: run directory (its ``model.safetensors``) or model file
    :param fmt: ``onnx`` or ``torchscript``
    :param out: the output file (default: ``policy.onnx`` / ``policy.pt`` next to the model)
    :return: what was written
    """
    model_path = resolve_model_path(path)
    out = Path(out) if out else model_path.parent / f"policy{SUFFIX[fmt]}"
    if out.is_dir():
        raise UsageError(f"--out {out} is a directory; give a file name")
    model = XiSAC.load(model_path, device="cpu")
    diff = export_policy(model, fmt, out)
    return ExportResult(out, model.observation_space.shape[0], model.action_space.shape[0], diff)
