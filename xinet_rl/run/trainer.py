"""The XiSAC trainer behind ``xinet-train``: from a checked plan to a complete run directory, or a resumed one.

The run directory holds ``config.yaml`` (resolved), TensorBoard event files, ``evaluations.csv``, ``checkpoints/``,
``model.safetensors`` and ``summary.json``. A resumed run continues from a checkpoint to the configured total, hiding
the TensorBoard events and evaluation rows it repeats.
"""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path
from typing import Any

import torch
from stable_baselines3.common.callbacks import CallbackList
from stable_baselines3.common.logger import Logger, TensorBoardOutputFormat
from stable_baselines3.common.monitor import Monitor
from torch.utils.tensorboard import SummaryWriter

from xinet_rl.agents.xisac import XiSAC, initial_widths
from xinet_rl.callbacks import Checkpoints, Evaluate, EvaluationsCSV, FinalCut, ProgressBar, RecordPruning
from xinet_rl.checkpoint import checkpoint_dirs, env_state, set_env_state
from xinet_rl.config import TrainConfig, agent_kwargs
from xinet_rl.envs import make_env
from xinet_rl.guards import FiniteObservations, GuardedEnv
from xinet_rl.run.artifacts import final_evaluation, write_run_config, write_summary
from xinet_rl.run.paths import arch_networks
from xinet_rl.run.plan import TrainingPlan
from xinet_rl.run.resume import record_total_steps


class Interrupted(Exception):
    """Training stopped by a signal; the checkpoint of ``step`` was written first.

    :param signum: the signal
    :param step: the step of the last checkpoint
    """

    def __init__(self, signum: int, step: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}")
        self.signum = signum


class ResumableTensorBoard(TensorBoardOutputFormat):
    """SB3's TensorBoard writer, with ``purge_step`` so that a resumed run hides the events it repeats.

    :param folder: where the event files go
    :param purge_step: the first step a resumed run writes again (``None``: a new run)
    """

    def __init__(self, folder: str, purge_step: int | None = None) -> None:
        self.writer = SummaryWriter(log_dir=folder, purge_step=purge_step)
        self._is_closed = False


def run_training(plan: TrainingPlan, device: torch.device, progress: bool = True) -> dict:
    """Carry out a plan: create its run directory and :func:`train`. A failure (other than a signal, which leaves
    a checkpoint) removes a directory the plan created while it holds no checkpoint and no evaluation yet.

    :param plan: the checked request (:mod:`xinet_rl.run.plan`)
    :param device: where to train
    :param progress: show a progress bar on stderr
    :return: the summary (``summary.json``)
    """
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    try:
        return train(plan.env_id, plan.config, plan.seed, plan.run_dir, device, progress=progress,
                     resume_from=plan.resume_from)
    except Interrupted:
        raise
    except BaseException:
        if plan.created and not checkpoint_dirs(plan.run_dir) and not (plan.run_dir / "evaluations.csv").exists():
            shutil.rmtree(plan.run_dir, ignore_errors=True)  # nothing worth keeping yet
        raise


def train(env_id: str, config: TrainConfig, seed: int, run_dir: Path, device: torch.device,
          progress: bool = True, resume_from: Path | None = None) -> dict:
    """Train (or resume), evaluate and write every artifact of a run into ``run_dir``.

    :param env_id: the environment id
    :param config: the resolved configuration
    :param seed: the seed of the agent and of the training environment (evaluation: ``seed + 10000``)
    :param run_dir: the run directory (created where missing)
    :param device: where to train
    :param progress: show a progress bar on stderr
    :param resume_from: a checkpoint of this run to continue from (``None``: a new run)
    :return: the summary (``summary.json``)
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    env = GuardedEnv(make_env(env_id, seed=seed))
    eval_env = Monitor(make_env(env_id, seed=seed + 10_000))
    table = EvaluationsCSV(run_dir / "evaluations.csv")
    if resume_from is None:
        write_run_config(run_dir, env_id, seed, config)
        # small: the pruned run's widths (times width_scale, 1 unless asked otherwise)
        widths = (initial_widths(config, env.observation_space, env.action_space)
                  .with_networks(arch_networks(config.arch_from)).scaled(config.width_scale)
                  if config.variant == "small" else None)
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
        return {"run": {**run_info, "elapsed": elapsed_before + time.perf_counter() - start,
                        "final_cuts": final_cut.records},
                "eval_env": env_state(eval_env)[0]}

    bar = ProgressBar(config.total_steps) if progress else None
    evaluation = Evaluate(eval_env, config.eval_freq, config.eval_episodes, table, bar)
    checkpoints = Checkpoints(run_dir, config.checkpoint_freq, config.keep_checkpoints, checkpoint_extra)
    pruning = RecordPruning(table, written=len(model.prune_events))
    final_cut = FinalCut(evaluation, pruning, run_info.get("final_cuts"))  # before the evaluation: it is of the cut
    callbacks = [FiniteObservations(), pruning, final_cut, evaluation, checkpoints]
    remaining = max(0, config.total_steps - model.num_timesteps)
    model.learn(total_timesteps=remaining, callback=CallbackList(callbacks + ([bar] if bar else [])),
                log_interval=config.log_interval, reset_num_timesteps=resume_from is None)
    if checkpoints.signal is not None:
        raise Interrupted(checkpoints.signal, checkpoints.last_step or model.num_timesteps)
    elapsed = elapsed_before + time.perf_counter() - start

    final = final_evaluation(model, eval_env, table, config.eval_episodes)
    model.save(run_dir / "model.safetensors")
    sizes = {
        "params_initial": run_info["params_initial"], "params_final": model.policy.param_counts(),
        "expected_params_final": model.policy.expected_param_counts(),
        "widths_initial": run_info["widths_initial"], "widths_final": model.policy.widths.networks(),
        "flops_initial": run_info["flops_initial"], "flops_final": model.flops(),
        "train_flops_total": int(model.train_flops), "budget": budget_summary(model),
        "final_cut": final_cut.record,
        "prune_events": len(model.prune_events),
    }
    summary = write_summary(run_dir, env_id, seed, model, final, elapsed, device, sizes)
    env.close()
    eval_env.close()
    return summary


def budget_summary(model: XiSAC) -> dict | None:
    """Where a budgeted run ended: the budget (key, unit, absolute and as a fraction of the initial deployable
    policy), the deployable cost of the units on (what ``xinet-export`` writes), expected and of the pruned tensors,
    each also relative to the budget, and the final strength. ``None`` without a budget.

    :param model: the trained model
    :return: the summary's ``budget`` entry
    """
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
