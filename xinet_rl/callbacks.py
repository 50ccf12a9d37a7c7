"""Callbacks of a training run: evaluation rows in ``evaluations.csv`` and the progress bar."""

from __future__ import annotations

import csv
import io
import json
import signal
from pathlib import Path
from typing import Any, Callable

import numpy as np
import gymnasium as gym
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from tqdm.auto import tqdm

from xinet_rl.checkpoint import checkpoint_dirs as list_checkpoints
from xinet_rl.io import write_text_atomic

EVAL_COLUMNS = ["step", "event", "return_mean", "return_std", "expected_params_train", "expected_params_deploy",
                "params_train", "params_deploy", "flops_update", "flops_env_step", "update_ms", "widths",
                "train_flops_total"]


class EvaluationsCSV:
    """``evaluations.csv``: one ``eval`` row per evaluation (return mean and std, expected and actual parameter counts)
    and one ``prune`` row per pruning event (actual counts, FLOPs per update and per env step, measured update time
    before the event, widths per layer as JSON); both carry the matmul FLOPs of all gradient updates so far. Rows are flushed as they are written."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            with self.path.open("w", newline="") as handle:
                csv.writer(handle).writerow(EVAL_COLUMNS)
        self.last_eval_step: int | None = None
        self.last_eval: dict | None = None

    def _write(self, row: dict) -> None:
        with self.path.open("a", newline="") as handle:
            csv.writer(handle).writerow([row.get(c, "") for c in EVAL_COLUMNS])
            handle.flush()

    def _model_columns(self, model) -> dict:
        p = model.policy
        if not hasattr(p, "expected_param_counts"):  # stable-baselines3's own SAC, the external reference
            counts = sb3_param_counts(model)
            return {"params_train": counts["train"], "params_deploy": counts["deploy"]}
        expected, actual, flops = p.expected_param_counts(), p.param_counts(), model.flops()
        return {"expected_params_train": round(expected["train"], 2),
                "expected_params_deploy": round(expected["deploy"], 2), "params_train": actual["train"],
                "params_deploy": actual["deploy"], "flops_update": flops["update"], "flops_env_step": flops["env_step"],
                "update_ms": "" if model.update_seconds is None else round(1000 * model.update_seconds, 3),
                "widths": json.dumps(p.widths.networks(), separators=(",", ":")),
                "train_flops_total": int(model.train_flops)}

    def append_eval(self, step: int, returns: np.ndarray, model) -> dict:
        """Write and return the row of an evaluation at ``step``."""
        row = {"step": int(step), "event": "eval", "return_mean": float(np.mean(returns)),
               "return_std": float(np.std(returns)), **self._model_columns(model)}
        self._write(row)
        self.last_eval_step, self.last_eval = int(step), row
        return row

    def truncate_after(self, step: int) -> None:
        """Drop the rows written after ``step`` (a resumed run writes them again) and recall the last evaluation."""
        with self.path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        kept = [r for r in rows if int(r["step"]) <= step]
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(EVAL_COLUMNS)
        writer.writerows([[r.get(c) or "" for c in EVAL_COLUMNS] for r in kept])  # older files lack a column
        write_text_atomic(self.path, text.getvalue())
        evals = [r for r in kept if r["event"] == "eval"]
        if evals:
            self.last_eval_step = int(evals[-1]["step"])
            self.last_eval = {"return_mean": float(evals[-1]["return_mean"]),
                              "return_std": float(evals[-1]["return_std"])}

    def append_prune(self, event: dict, model) -> None:
        row = {**self._model_columns(model), "step": event["step"], "event": "prune",
               "update_ms": "" if event["update_ms_before"] is None else event["update_ms_before"]}
        self._write(row)


def sb3_param_counts(model) -> dict[str, int]:
    """Parameters of a stable-baselines3 SAC: actor and both critics (train), actor (deploy); targets excluded."""
    actor = sum(x.numel() for x in model.policy.actor.parameters())
    critic = sum(x.numel() for x in model.policy.critic.parameters())
    return {"train": actor + critic, "deploy": actor}


class RecordPruning(BaseCallback):
    """Writes a ``prune`` row for every pruning event of the model as soon as it happens (events of the update that
    follows a step are flushed before the next step, so before any checkpoint taken there, and those of the run's
    last update when training ends)."""

    def __init__(self, table: EvaluationsCSV, written: int = 0) -> None:
        super().__init__()
        self.table, self.written = table, written

    def _flush(self) -> None:
        events = self.model.prune_events
        while self.written < len(events):
            self.table.append_prune(events[self.written], self.model)
            self.written += 1

    def _on_rollout_start(self) -> None:
        self._flush()

    def _on_step(self) -> bool:
        self._flush()
        return True

    def _on_training_end(self) -> None:
        self._flush()


class Evaluate(BaseCallback):
    """Deterministic evaluation on a separate environment at every multiple of ``every`` steps of the run (also after
    a resume), written to ``evaluations.csv``, TensorBoard (``eval/``) and the progress bar.

    It runs at the start of a rollout, after the update of the step just taken, so the row for step ``S`` describes
    the model a checkpoint at ``S`` holds (and the one a run of ``S`` steps ends with)."""

    def __init__(self, eval_env: gym.Env, every: int, episodes: int, table: EvaluationsCSV,
                 progress: "ProgressBar | None" = None) -> None:
        super().__init__()
        self.eval_env, self.every, self.episodes, self.table, self.progress = eval_env, every, episodes, table, progress

    def _on_step(self) -> bool:
        return True

    def _on_rollout_start(self) -> None:
        step = self.model.num_timesteps
        if self.every > 0 and step > 0 and step % self.every == 0 and step != self.table.last_eval_step:
            self.num_timesteps = step
            returns, lengths = evaluate_policy(self.model, self.eval_env, n_eval_episodes=self.episodes,
                                               deterministic=True, return_episode_rewards=True)
            row = self.table.append_eval(self.num_timesteps, np.asarray(returns), self.model)
            self.logger.record("eval/mean_reward", row["return_mean"])
            if "train_flops_total" in row:
                self.logger.record("eval/train_flops_total", row["train_flops_total"])
            self.logger.record("eval/return_std", row["return_std"])
            self.logger.record("eval/mean_ep_length", float(np.mean(lengths)))
            self.logger.dump(self.num_timesteps)
            if self.progress is not None:
                self.progress.latest_return = row["return_mean"]


class Checkpoints(BaseCallback):
    """Checkpoint every ``every`` steps and when SIGINT or SIGTERM arrives, then stop.

    Checkpoints are taken at the start of a rollout, after the previous step's transition is stored and its update
    done, so that a resumed run continues exactly where the checkpoint left off.
    """

    def __init__(self, run_dir: Path, every: int, keep: int, extra: Callable[[], dict] | None = None) -> None:
        super().__init__()
        self.run_dir, self.every, self.keep, self.extra = Path(run_dir), every, keep, extra
        self.signal: int | None = None
        self.stopping = False  # a signal arrived and its checkpoint is written: stop at the next step
        self.last_step: int | None = None
        self._previous: dict[int, Any] = {}

    def _on_training_start(self) -> None:
        self.last_step = self.model.num_timesteps
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.signal = signum

    def _on_rollout_start(self) -> None:
        step = self.model.num_timesteps
        due = self.every > 0 and step // self.every > (self.last_step or 0) // self.every
        if due or self.signal is not None:
            if step != self.last_step or not list_checkpoints(self.run_dir):
                self.model.save_checkpoint(self.run_dir, self.keep, self.extra() if self.extra else None)
                self.last_step = step
            self.stopping = self.signal is not None

    def _on_step(self) -> bool:
        return not self.stopping

    def _on_training_end(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class ProgressBar(BaseCallback):
    """Steps, steps/s, ETA and the latest evaluation return."""

    def __init__(self, total: int) -> None:
        super().__init__()
        self.total = total
        self.latest_return: float | None = None
        self.bar: tqdm | None = None

    def _on_training_start(self) -> None:
        self.bar = tqdm(total=self.total, initial=self.num_timesteps, unit="step", dynamic_ncols=True)

    def _on_step(self) -> bool:
        assert self.bar is not None
        self.bar.update(self.num_timesteps - self.bar.n)
        if self.latest_return is not None and self.num_timesteps % 100 == 0:
            self.bar.set_postfix(eval_return=f"{self.latest_return:.1f}", refresh=False)
        return True

    def _on_training_end(self) -> None:
        if self.bar is not None:
            self.bar.close()
