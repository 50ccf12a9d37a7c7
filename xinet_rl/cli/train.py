"""``xinet-train``: train an XiSAC agent and write a complete run directory.

The run directory holds ``config.yaml`` (resolved), TensorBoard event files, ``evaluations.csv``, ``model.safetensors``
and ``summary.json``. Everything is validated before the directory is created, so bad input leaves nothing behind.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
import yaml
from stable_baselines3.common.callbacks import CallbackList, EvalCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import configure
from stable_baselines3.common.monitor import Monitor

from xinet_rl.agents.xisac import XiSAC
from xinet_rl.callbacks import EvaluationsCSV, ProgressBar, RecordEvaluation, RecordPruning
from xinet_rl.cli.common import Parser, UsageError, run_main
from xinet_rl.config import TrainConfig, agent_kwargs, resolve_config
from xinet_rl.envs import check_env_id, make_env
from xinet_rl.io import write_text_atomic

PROG = "xinet-train"


def build_parser() -> Parser:
    parser = Parser(prog=PROG, description="Train a SAC agent with a gated OFENet that prunes itself while it learns.")
    parser.add_argument("--env", required=True, help="gymnasium id, e.g. HalfCheetah-v4")
    parser.add_argument("--config", help="YAML file of config keys (applied after the environment's defaults)")
    parser.add_argument("--total-steps", type=_non_negative_int, help="environment steps (overrides total_steps)")
    parser.add_argument("--seed", type=_non_negative_int, default=0)
    parser.add_argument("--out", help="run directory (default: runs/ENV_sSEED_TIME)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key (repeatable)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was requested but no CUDA device is available")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def default_run_dir(env_id: str, seed: int) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{env_id}_s{seed}_{stamp}"


def train(env_id: str, config: TrainConfig, seed: int, run_dir: Path, device: torch.device,
          progress: bool = True) -> dict:
    """Train, evaluate and write every artifact of a run into ``run_dir`` (which must not exist or be empty)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "config.yaml",
                      yaml.safe_dump({"env": env_id, "seed": seed, **asdict(config)}, sort_keys=False))
    env = make_env(env_id, seed=seed)
    eval_env = Monitor(make_env(env_id, seed=seed + 10_000))
    model = XiSAC(env, seed=seed, device=device, **agent_kwargs(config))
    model.set_logger(configure(str(run_dir), ["tensorboard"]))
    params_initial, widths_initial = model.policy.param_counts(), model.policy.widths.networks()
    flops_initial = model.policy.flops(config.batch_size)

    table = EvaluationsCSV(run_dir / "evaluations.csv")
    bar = ProgressBar(config.total_steps) if progress else None
    evaluation = EvalCallback(eval_env, n_eval_episodes=config.eval_episodes, eval_freq=config.eval_freq,
                              log_path=str(run_dir), deterministic=True, verbose=0,
                              callback_after_eval=RecordEvaluation(table, bar))
    callbacks = CallbackList([evaluation, RecordPruning(table)] + ([bar] if bar is not None else []))
    start = time.perf_counter()
    model.learn(total_timesteps=config.total_steps, callback=callbacks, log_interval=config.log_interval)
    elapsed = time.perf_counter() - start

    pruned_since = bool(model.prune_events) and model.prune_events[-1]["step"] >= (table.last_eval_step or 0)
    if table.last_eval_step != model.num_timesteps or pruned_since:  # the final policy is always evaluated
        returns, _ = evaluate_policy(model, eval_env, n_eval_episodes=config.eval_episodes, deterministic=True,
                                     return_episode_rewards=True)
        final = table.append_eval(model.num_timesteps, np.asarray(returns), model)
    else:
        final = {"return_mean": float(np.mean(evaluation.evaluations_results[-1])),
                 "return_std": float(np.std(evaluation.evaluations_results[-1]))}
    model.save(run_dir / "model.safetensors")
    summary = {
        "env": env_id, "seed": seed, "total_steps": int(model.num_timesteps),
        "final_eval_return_mean": final["return_mean"], "final_eval_return_std": final["return_std"],
        "steps_per_second": round(model.num_timesteps / elapsed, 2), "wall_seconds": round(elapsed, 1),
        "params_initial": params_initial, "params_final": model.policy.param_counts(),
        "expected_params_final": model.policy.expected_param_counts(),
        "widths_initial": widths_initial, "widths_final": model.policy.widths.networks(),
        "flops_initial": flops_initial, "flops_final": model.policy.flops(config.batch_size),
        "prune_events": len(model.prune_events),
        "device": str(device), "torch_threads": torch.get_num_threads(),
    }
    write_text_atomic(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    env.close()
    eval_env.close()
    return summary


def main(argv: list[str] | None = None) -> None:
    def body() -> int:
        args = build_parser().parse_args(argv)
        check_env_id(args.env)
        config = resolve_config(args.env, args.config, args.overrides, args.total_steps)
        device = resolve_device(args.device)
        run_dir = Path(args.out) if args.out else default_run_dir(args.env, args.seed)
        if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
            raise UsageError(f"run directory {run_dir} already exists and is not empty")
        created = not run_dir.exists()
        try:
            summary = train(args.env, config, args.seed, run_dir, device, progress=not args.no_progress)
        except BaseException:
            if created and not (run_dir / "evaluations.csv").exists():
                shutil.rmtree(run_dir, ignore_errors=True)  # nothing worth keeping yet
            raise
        print(f"{PROG}: {args.env} seed {args.seed}: final return {summary['final_eval_return_mean']:.1f} "
              f"± {summary['final_eval_return_std']:.1f}, {summary['params_final']['train']} parameters "
              f"({summary['params_final']['deploy']} deployable), {summary['steps_per_second']} steps/s -> {run_dir}")
        return 0

    run_main(PROG, body)


if __name__ == "__main__":
    main()
