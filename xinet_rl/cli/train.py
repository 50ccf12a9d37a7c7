"""``xinet-train``: train an XiSAC agent and write a complete run directory, or resume one.

The run directory holds ``config.yaml`` (resolved), TensorBoard event files, ``evaluations.csv``, ``checkpoints/``,
``model.safetensors`` and ``summary.json``. Everything is validated before the directory is created, so bad input
leaves nothing behind. ``--resume DIR`` continues from the newest valid checkpoint to the configured total.

This module parses the command line; the work is :mod:`xinet_rl.run.plan` and :mod:`xinet_rl.run.trainer`'s.
"""

from __future__ import annotations

import sys
from pathlib import Path

from xinet_rl.cli.common import Parser, UsageError, int_at_least, resolve_device, run_main
from xinet_rl.config import VARIANTS
from xinet_rl.run.plan import plan_new_run, plan_resume
from xinet_rl.run.trainer import Interrupted, run_training

PROG = "xinet-train"


def build_parser() -> Parser:
    parser = Parser(prog=PROG, description="Train a SAC agent with a gated OFENet that prunes itself while it learns. "
                    "Config keys apply in this order: the defaults, the environment's shipped YAML, --config, --set, "
                    "--total-steps.", epilog="Budgets: instead of choosing prune_strength, state the size of the "
                    "deployable policy and let the strength follow it, e.g. --set target_deploy_params=10% (or 0.1, "
                    "or a count such as 16000 parameters; target_deploy_flops for matmul FLOPs per action). The run "
                    "ends with its deployed policy within the budget (README: Pruning to a budget).")
    parser.add_argument("--env", help="gymnasium id of a continuous-control environment, e.g. HalfCheetah-v4, or "
                        "module:Id for one a module registers (required unless --resume)")
    parser.add_argument("--config", metavar="FILE", help="YAML file of config keys (applied after the environment's "
                        "defaults; default: none)")
    parser.add_argument("--total-steps", type=int_at_least(0), metavar="N",
                        help="environment steps; overrides total_steps (default: the config's total_steps, 1000000 "
                        "unless a file sets it); with --resume: the new total, recorded in the run's config.yaml")
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="random seed of the agent and environments")
    parser.add_argument("--out", metavar="DIR", help="run directory, new or empty (default: runs/ENV_sSEED_TIME)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where to train; auto: cuda where available, else cpu")
    parser.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override config keys: several pairs after one --set, or --set repeated; values are "
                        "YAML (e.g. --set batch_size=128 actor_widths=[64,64]) (default: none)")
    parser.add_argument("--variant", choices=VARIANTS, help="xinet, unpruned (same widths, no gates), small (final "
                        "widths of --arch-from, from scratch, no gates) or sac (no OFENet) (default: the config's "
                        "variant, xinet)")
    parser.add_argument("--arch-from", metavar="RUN", help="pruned run directory or model file (for --variant small; "
                        "a run directory without its model file gives its summary.json's widths_final; default: none)")
    parser.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its newest valid checkpoint "
                        "(takes only --total-steps, --device and --no-progress)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (default: a progress bar on "
                        "stderr)")
    return parser


def main(argv: list[str] | None = None) -> None:
    def body() -> int:
        args = build_parser().parse_args(argv)
        device = resolve_device(args.device)
        if args.resume is not None:
            if args.env or args.config or args.overrides or args.out or args.variant or args.arch_from:
                raise UsageError("--resume takes only --total-steps, --device and --no-progress")
            plan = plan_resume(Path(args.resume), args.total_steps)
        else:
            if not args.env:
                raise UsageError("the following arguments are required: --env (or --resume DIR)")
            plan = plan_new_run(args.env, args.seed, args.config, args.overrides, args.total_steps, args.variant,
                                args.arch_from, args.out)
        try:
            summary = run_training(plan, device, progress=not args.no_progress)
        except Interrupted as exc:
            print(f"{PROG}: {exc}; checkpoint saved, continue with: xinet-train --resume {plan.run_dir}",
                  file=sys.stderr)
            return 128 + exc.signum
        print(f"{PROG}: {plan.env_id} seed {plan.seed}: final return {summary['final_eval_return_mean']:.1f} "
              f"± {summary['final_eval_return_std']:.1f}, {summary['params_final']['train']} parameters "
              f"({summary['params_final']['deploy']} deployable), {summary['steps_per_second']} steps/s "
              f"-> {plan.run_dir}")
        return 0

    run_main(PROG, body)


if __name__ == "__main__":
    main()
