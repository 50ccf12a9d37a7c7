"""``xinet-export``: the deployable policy (pruned state block + actor, deterministic action) as a standalone file.

This module parses the command line and prints; the work is :mod:`xinet_rl.run.export`'s.
"""

from __future__ import annotations

from pathlib import Path

from xinet_rl.cli.common import Parser, run_main
from xinet_rl.export import FORMATS, TOLERANCE
from xinet_rl.run.export import export_saved

PROG = "xinet-export"


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
        result = export_saved(Path(args.path), args.format, args.out)
        print(f"{PROG}: wrote {result.out} ({args.format}, input 'obs' [batch, {result.obs_dim}], output "
              f"'action' [batch, {result.action_dim}]); max |exported - PyTorch| on 256 random "
              f"observations: {result.max_diff:.2e} (limit {TOLERANCE:g})")
        return 0

    run_main(PROG, body)


if __name__ == "__main__":
    main()
