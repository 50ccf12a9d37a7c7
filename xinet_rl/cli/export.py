"""``xinet-export``: the deployable policy (pruned state block + actor, deterministic action) as a standalone file."""

from __future__ import annotations

from pathlib import Path

from xinet_rl.agents.xisac import XiSAC
from xinet_rl.cli.common import Parser, UsageError, run_main
from xinet_rl.cli.evaluate import resolve_model_path
from xinet_rl.export import FORMATS, TOLERANCE, export_policy

PROG = "xinet-export"
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}


def build_parser() -> Parser:
    parser = Parser(prog=PROG, description="Export the deployable policy of a saved XiSAC model (the pruned state "
                    "block and actor, deterministic action) as a standalone file, checked against PyTorch.")
    parser.add_argument("path", help="run directory (its model.safetensors) or model file")
    parser.add_argument("--format", choices=FORMATS, required=True,
                        help="onnx (input 'obs', output 'action') or torchscript (required)")
    parser.add_argument("--out", metavar="FILE", help="output file (default: policy.onnx / policy.pt next to the "
                        "model)")
    return parser


def main(argv: list[str] | None = None) -> None:
    def body() -> int:
        args = build_parser().parse_args(argv)
        model_path = resolve_model_path(Path(args.path))
        out = Path(args.out) if args.out else model_path.parent / f"policy{SUFFIX[args.format]}"
        if out.is_dir():
            raise UsageError(f"--out {out} is a directory; give a file name")
        model = XiSAC.load(model_path, device="cpu")
        diff = export_policy(model, args.format, out)
        print(f"{PROG}: wrote {out} ({args.format}, input 'obs' [batch, {model.observation_space.shape[0]}], output "
              f"'action' [batch, {model.action_space.shape[0]}]); max |exported - PyTorch| on 256 random "
              f"observations: {diff:.2e} (limit {TOLERANCE:g})")
        return 0

    run_main(PROG, body)


if __name__ == "__main__":
    main()
