"""Callbacks of a training run: evaluation rows in ``evaluations.csv`` and the progress bar."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback, EvalCallback
from tqdm.auto import tqdm

EVAL_COLUMNS = ["step", "event", "return_mean", "return_std", "expected_params_train", "expected_params_deploy",
                "params_train", "params_deploy", "flops_update", "flops_env_step", "update_ms", "widths"]


class EvaluationsCSV:
    """``evaluations.csv``: one ``eval`` row per evaluation (return mean and std, expected and actual parameter counts)
    and one ``prune`` row per pruning event (actual counts, FLOPs per update and per env step, measured update time
    before the event, widths per layer as JSON). Rows are flushed as they are written."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            with self.path.open("w", newline="") as handle:
                csv.writer(handle).writerow(EVAL_COLUMNS)
        self.last_eval_step: int | None = None

    def _write(self, row: dict) -> None:
        with self.path.open("a", newline="") as handle:
            csv.writer(handle).writerow([row.get(c, "") for c in EVAL_COLUMNS])
            handle.flush()

    def _model_columns(self, model) -> dict:
        p = model.policy
        expected, actual, flops = p.expected_param_counts(), p.param_counts(), p.flops(model.batch_size)
        return {"expected_params_train": round(expected["train"], 2),
                "expected_params_deploy": round(expected["deploy"], 2), "params_train": actual["train"],
                "params_deploy": actual["deploy"], "flops_update": flops["update"], "flops_env_step": flops["env_step"],
                "update_ms": "" if model.update_seconds is None else round(1000 * model.update_seconds, 3),
                "widths": json.dumps(p.widths.networks(), separators=(",", ":"))}

    def append_eval(self, step: int, returns: np.ndarray, model) -> dict:
        """Write and return the row of an evaluation at ``step``."""
        row = {"step": int(step), "event": "eval", "return_mean": float(np.mean(returns)),
               "return_std": float(np.std(returns)), **self._model_columns(model)}
        self._write(row)
        self.last_eval_step = int(step)
        return row

    def append_prune(self, event: dict, model) -> None:
        row = {**self._model_columns(model), "step": event["step"], "event": "prune",
               "update_ms": "" if event["update_ms_before"] is None else event["update_ms_before"]}
        self._write(row)


class RecordPruning(BaseCallback):
    """Writes a ``prune`` row for every pruning event of the model as soon as it happens."""

    def __init__(self, table: EvaluationsCSV) -> None:
        super().__init__()
        self.table, self.written = table, 0

    def _on_step(self) -> bool:
        events = self.model.prune_events
        while self.written < len(events):
            self.table.append_prune(events[self.written], self.model)
            self.written += 1
        return True


class RecordEvaluation(BaseCallback):
    """Runs after each evaluation of an :class:`EvalCallback` (its ``callback_after_eval``)."""

    def __init__(self, table: EvaluationsCSV, progress: "ProgressBar | None" = None) -> None:
        super().__init__()
        self.table, self.progress = table, progress

    def _on_step(self) -> bool:
        parent = self.parent
        assert isinstance(parent, EvalCallback) and parent.evaluations_results
        row = self.table.append_eval(self.num_timesteps, np.asarray(parent.evaluations_results[-1]), self.model)
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
