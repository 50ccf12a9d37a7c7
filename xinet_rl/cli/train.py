"""``xinet-train``: train an XiSAC agent and write a complete run directory, or resume one.

The run directory holds ``config.yaml`` (resolved), TensorBoard event files, ``evaluations.csv``, ``checkpoints/``,
``model.safetensors`` and ``summary.json``. Everything is validated before the directory is created, so bad input
leaves nothing behind. ``--resume DIR`` continues from the newest valid checkpoint to the configured total.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from stable_baselines3.common.callbacks import CallbackList
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import Logger, TensorBoardOutputFormat
from stable_baselines3.common.monitor import Monitor
from torch.utils.tensorboard import SummaryWriter

from xinet_rl.agents.xisac import XiSAC, check_budget
from xinet_rl.callbacks import Checkpoints, Evaluate, EvaluationsCSV, ProgressBar, RecordPruning
from xinet_rl.checkpoint import CheckpointError, checkpoint_dirs, env_state, read_checkpoint, set_env_state
from xinet_rl.cli.common import Parser, UsageError, int_at_least, resolve_device, run_main
from xinet_rl.config import (BUDGET_KEYS, VARIANTS, ConfigError, TrainConfig, agent_kwargs, apply_overrides, read_yaml,
                             resolve_config)
from xinet_rl.envs import check_env_id, make_env
from xinet_rl.guards import FiniteObservations, GuardedEnv
from xinet_rl.io import ModelFileError, read_model_file, write_text_atomic
from xinet_rl.structure import Widths

PROG = "xinet-train"


class Interrupted(Exception):
    def __init__(self, signum: int, step: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}")
        self.signum = signum


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
                        "default: none)")
    parser.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its newest valid checkpoint "
                        "(takes only --total-steps, --device and --no-progress)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (default: a progress bar on "
                        "stderr)")
    return parser


def default_run_dir(env_id: str, seed: int) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{env_id}_s{seed}_{stamp}"


class ResumableTensorBoard(TensorBoardOutputFormat):
    """SB3's TensorBoard writer, with ``purge_step`` so that a resumed run hides the events it repeats."""

    def __init__(self, folder: str, purge_step: int | None = None) -> None:
        self.writer = SummaryWriter(log_dir=folder, purge_step=purge_step)
        self._is_closed = False


def newest_valid_checkpoint(run_dir: Path) -> Path:
    """The newest checkpoint that passes validation; each one that fails is reported on stderr."""
    candidates = checkpoint_dirs(run_dir)
    if not candidates:
        raise UsageError(f"{run_dir} has no checkpoints to resume from")
    for path in candidates:
        try:
            read_checkpoint(path)
            return path
        except CheckpointError as exc:
            print(f"{PROG}: warning: skipping invalid checkpoint: {exc}", file=sys.stderr)
    raise CheckpointError(f"{run_dir}: no valid checkpoint")


def train(env_id: str, config: TrainConfig, seed: int, run_dir: Path, device: torch.device,
          progress: bool = True, resume_from: Path | None = None) -> dict:
    """Train (or resume), evaluate and write every artifact of a run into ``run_dir``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    env = GuardedEnv(make_env(env_id, seed=seed))
    eval_env = Monitor(make_env(env_id, seed=seed + 10_000))
    table = EvaluationsCSV(run_dir / "evaluations.csv")
    if resume_from is None:
        write_text_atomic(run_dir / "config.yaml",
                          yaml.safe_dump({"env": env_id, "seed": seed, **asdict(config)}, sort_keys=False))
        # small: the pruned run's widths (times width_scale, 1 unless asked otherwise)
        widths = arch_widths(config.arch_from).scaled(config.width_scale) if config.variant == "small" else None
        model = XiSAC(env, seed=seed, device=device, widths=widths, **agent_kwargs(config))
        run_info: dict[str, Any] = {"params_initial": model.policy.param_counts(),
                                    "widths_initial": model.policy.widths.networks(),
                                    "flops_initial": model.flops(), "elapsed": 0.0}
        purge = None
    else:
        model, meta = XiSAC.from_checkpoint(resume_from, env, device=device)
        record_total_steps(run_dir / "config.yaml", config.total_steps)
        run_info = meta["run"]
        set_env_state(eval_env, meta["eval_env"], {})  # evaluations after a resume see the same episodes
        table.truncate_after(model.num_timesteps)
        purge = model.num_timesteps + 1
    model.set_logger(Logger(str(run_dir), [ResumableTensorBoard(str(run_dir), purge)]))

    start = time.perf_counter()
    elapsed_before = float(run_info["elapsed"])

    def checkpoint_extra() -> dict:
        return {"run": {**run_info, "elapsed": elapsed_before + time.perf_counter() - start},
                "eval_env": env_state(eval_env)[0]}

    bar = ProgressBar(config.total_steps) if progress else None
    evaluation = Evaluate(eval_env, config.eval_freq, config.eval_episodes, table, bar)
    checkpoints = Checkpoints(run_dir, config.checkpoint_freq, config.keep_checkpoints, checkpoint_extra)
    callbacks = [FiniteObservations(), RecordPruning(table, written=len(model.prune_events)), evaluation, checkpoints]
    remaining = max(0, config.total_steps - model.num_timesteps)
    model.learn(total_timesteps=remaining, callback=CallbackList(callbacks + ([bar] if bar else [])),
                log_interval=config.log_interval, reset_num_timesteps=resume_from is None)
    if checkpoints.signal is not None:
        raise Interrupted(checkpoints.signal, checkpoints.last_step or model.num_timesteps)
    if model.budget is not None and model.cut_off_units():  # the final model is the policy it deploys
        table.append_prune(model.prune_events[-1], model)
    elapsed = elapsed_before + time.perf_counter() - start

    if table.last_eval_step != model.num_timesteps:  # the final policy is always evaluated
        returns, _ = evaluate_policy(model, eval_env, n_eval_episodes=config.eval_episodes, deterministic=True,
                                     return_episode_rewards=True)
        final = table.append_eval(model.num_timesteps, np.asarray(returns), model)
    else:
        final = table.last_eval
    model.save(run_dir / "model.safetensors")
    summary = {
        "env": env_id, "seed": seed, "total_steps": int(model.num_timesteps),
        "final_eval_return_mean": final["return_mean"], "final_eval_return_std": final["return_std"],
        "steps_per_second": round(model.num_timesteps / max(elapsed, 1e-9), 2), "wall_seconds": round(elapsed, 1),
        "params_initial": run_info["params_initial"], "params_final": model.policy.param_counts(),
        "expected_params_final": model.policy.expected_param_counts(),
        "widths_initial": run_info["widths_initial"], "widths_final": model.policy.widths.networks(),
        "flops_initial": run_info["flops_initial"], "flops_final": model.flops(),
        "train_flops_total": int(model.train_flops), "budget": budget_summary(model),
        "prune_events": len(model.prune_events), "device": str(device), "torch_threads": torch.get_num_threads(),
    }
    write_text_atomic(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    env.close()
    eval_env.close()
    return summary


def budget_summary(model: XiSAC) -> dict | None:
    """Where a budgeted run ended: the budget (key, unit, absolute and as a fraction of the initial deployable
    policy), the deployable cost of the units on (what ``xinet-export`` writes), expected and of the pruned tensors,
    each also relative to the budget, and the final strength. ``None`` without a budget."""
    budget = model.budget
    if budget is None:
        return None
    state = model.budget_state()
    return {"key": budget.key, "unit": budget.kind, "target": round(budget.target, 2),
            "target_fraction": round(budget.fraction, 6), "initial": round(budget.initial, 2),
            "final_on": round(state["on"], 2), "final_on_fraction_of_target": round(state["on"] / budget.target, 4),
            "final_expected": round(state["expected"], 2), "final_held": round(state["held"], 2),
            "final_model": round(state["model"], 2),
            "final_model_fraction_of_target": round(state["model"] / budget.target, 4),
            "prune_strength_final": state["prune_strength"]}


def arch_widths(source: str) -> Widths:
    """The final widths of a run directory (its ``model.safetensors``) or of a model file."""
    path = Path(source)
    if path.is_dir():
        path = path / "model.safetensors"
    _, meta = read_model_file(path)
    try:
        return Widths.from_dict(meta["widths"])
    except (KeyError, TypeError, ValueError):
        raise ModelFileError(f"{path}: the model file does not record its widths") from None


def record_total_steps(path: Path, total_steps: int) -> None:
    """Write a resumed run's (new) total into its ``config.yaml``, the rest of the file unchanged."""
    data = read_yaml(path)
    if data.get("total_steps") != total_steps:
        data["total_steps"] = total_steps
        write_text_atomic(path, yaml.safe_dump(data, sort_keys=False))


def load_run_config(run_dir: Path, total_steps: int | None) -> tuple[str, int, TrainConfig]:
    """The environment, seed and configuration a run directory was started with."""
    data = read_yaml(run_dir / "config.yaml")
    try:
        env_id, seed = str(data.pop("env")), int(data.pop("seed"))
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"{run_dir / 'config.yaml'} does not name the run's env and seed") from None
    config = apply_overrides(TrainConfig(), data, str(run_dir / "config.yaml"), env_id)
    if total_steps is not None:
        config.total_steps = total_steps
    return env_id, seed, config


def main(argv: list[str] | None = None) -> None:
    def body() -> int:
        args = build_parser().parse_args(argv)
        device = resolve_device(args.device)
        if args.resume is not None:
            if args.env or args.config or args.overrides or args.out or args.variant or args.arch_from:
                raise UsageError("--resume takes only --total-steps, --device and --no-progress")
            run_dir = Path(args.resume)
            if not run_dir.is_dir():
                raise UsageError(f"run directory not found: {run_dir}")
            env_id, seed, config = load_run_config(run_dir, args.total_steps)
            check_env_id(env_id)
            checkpoint = newest_valid_checkpoint(run_dir)
            return _run(env_id, config, seed, run_dir, device, args, checkpoint, created=False)
        if not args.env:
            raise UsageError("the following arguments are required: --env (or --resume DIR)")
        check_env_id(args.env)
        overrides = list(args.overrides)
        if args.variant:
            overrides.append(f"variant={args.variant}")
        if args.arch_from:
            overrides.append(f"arch_from={args.arch_from}")
        config = resolve_config(args.env, args.config, overrides, args.total_steps)
        if config.variant == "small":
            arch_widths(config.arch_from)  # a missing or foreign source run is a user error, before anything is written
        if any(getattr(config, key) is not None for key in BUDGET_KEYS):  # a budget the model cannot meet, too
            probe = make_env(args.env, seed=args.seed)
            try:
                check_budget(config, probe.observation_space, probe.action_space)
            finally:
                probe.close()
        run_dir = Path(args.out) if args.out else default_run_dir(args.env, args.seed)
        if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
            raise UsageError(f"run directory {run_dir} already exists and is not empty (resume it with --resume)")
        return _run(args.env, config, args.seed, run_dir, device, args, None, created=not run_dir.exists())

    run_main(PROG, body)


def _run(env_id: str, config: TrainConfig, seed: int, run_dir: Path, device: torch.device, args: argparse.Namespace,
         checkpoint: Path | None, created: bool) -> int:
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        summary = train(env_id, config, seed, run_dir, device, progress=not args.no_progress, resume_from=checkpoint)
    except Interrupted as exc:
        print(f"{PROG}: {exc}; checkpoint saved, continue with: xinet-train --resume {run_dir}", file=sys.stderr)
        return 128 + exc.signum
    except BaseException:
        if created and not checkpoint_dirs(run_dir) and not (run_dir / "evaluations.csv").exists():
            shutil.rmtree(run_dir, ignore_errors=True)  # nothing worth keeping yet
        raise
    print(f"{PROG}: {env_id} seed {seed}: final return {summary['final_eval_return_mean']:.1f} "
          f"± {summary['final_eval_return_std']:.1f}, {summary['params_final']['train']} parameters "
          f"({summary['params_final']['deploy']} deployable), {summary['steps_per_second']} steps/s -> {run_dir}")
    return 0


if __name__ == "__main__":
    main()
