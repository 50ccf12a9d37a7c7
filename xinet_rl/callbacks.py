"""Callbacks of a training run: evaluation rows in ``evaluations.csv`` and the progress bar."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback, EvalCallback
from tqdm.auto import tqdm

EVAL_COLUMNS = ["step", "return_mean", "return_std", "expected_params_train", "expected_params_deploy",
                "params_train", "params_deploy"]


class EvaluationsCSV:
    """Appends one row per evaluation: step, return mean and std, expected and actual parameter counts."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            with self.path.open("w", newline="") as handle:
                csv.writer(handle).writerow(EVAL_COLUMNS)
        self.last_step: int | None = None

    def append(self, step: int, returns: np.ndarray, model) -> dict:
        expected = model.policy.expected_param_counts()
        actual = model.policy.param_counts()
        row = {"step": int(step), "return_mean": float(np.mean(returns)), "return_std": float(np.std(returns)),
               "expected_params_train": round(expected["train"], 2),
               "expected_params_deploy": round(expected["deploy"], 2),
               "params_train": actual["train"], "params_deploy": actual["deploy"]}
        with self.path.open("a", newline="") as handle:
            csv.writer(handle).writerow([row[c] for c in EVAL_COLUMNS])
            handle.flush()
        self.last_step = int(step)
        return row


class RecordEvaluation(BaseCallback):
    """Runs after each evaluation of an :class:`EvalCallback` (its ``callback_after_eval``)."""

    def __init__(self, table: EvaluationsCSV, progress: "ProgressBar | None" = None) -> None:
        super().__init__()
        self.table, self.progress = table, progress

    def _on_step(self) -> bool:
        parent = self.parent
        assert isinstance(parent, EvalCallback) and parent.evaluations_results
        row = self.table.append(self.num_timesteps, np.asarray(parent.evaluations_results[-1]), self.model)
        self.logger.record("eval/return_std", row["return_std"])
        if self.progress is not None:
            self.progress.latest_return = row["return_mean"]
        return True


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
