"""``xinet-eval``: run a saved policy on a fresh environment and report its return, size and inference latency.

This module parses the command line and prints; the work is :mod:`xinet_rl.run.evaluation`'s.
"""

from __future__ import annotations

import json
from pathlib import Path

from xinet_rl.cli.common import Parser, int_at_least, run_main
from xinet_rl.run.evaluation import evaluate_saved

PROG = "xinet-eval"


def build_parser() -> Parser:
    parser = Parser(prog=PROG, description="Evaluate a saved XiSAC policy (a run directory or a model file): return "
                    "over fresh episodes, size and inference latency.")
    parser.add_argument("path", help="run directory (its model.safetensors) or model file")
    parser.add_argument("--episodes", type=int_at_least(1), default=10, help="evaluation episodes")
    parser.add_argument("--seed", type=int, default=0, help="seed of the environment and of sampled actions")
    parser.add_argument("--env", help="environment id (default: the one the model was trained on)")
    parser.add_argument("--stochastic", action="store_true",
                        help="sample actions instead of the mean action (default: the deterministic mean action)")
    parser.add_argument("--json", action="store_true", help="print one JSON object (default: one line of text)")
    parser.add_argument("--video", metavar="DIR", help="record MP4 videos of the episodes into DIR (default: none)")
    return parser


def main(argv: list[str] | None = None) -> None:
    def body() -> int:
        args = build_parser().parse_args(argv)
        result = evaluate_saved(Path(args.path), args.episodes, args.seed, args.env, not args.stochastic, args.video)
        if args.json:
            print(json.dumps(result))
        else:
            lengths = result["episode_lengths"]
            print(f"{result['env']}: return {result['return_mean']:.1f} ± {result['return_std']:.1f} over "
                  f"{args.episodes} episodes (lengths {min(lengths)}-{max(lengths)}), {result['params_deploy']} "
                  f"deployable parameters, {result['latency_ms']:.3f} ms per action")
        return 0

    run_main(PROG, body)


if __name__ == "__main__":
    main()
