"""Callbacks of a training run: evaluation rows in ``evaluations.csv`` and the progress bar."""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import signal
from pathlib import Path
from typing import Any, Callable

import numpy as np
import gymnasium as gym
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from tqdm.auto import tqdm

from xinet_rl.checkpoint import checkpoint_dirs as list_checkpoints
from xinet_rl.checkpoint import env_state, set_env_state
from xinet_rl.final_cut import cut_applied
from xinet_rl.io import write_text_atomic

EVAL_COLUMNS = ["step", "event", "return_mean", "return_std", "expected_params_train", "expected_params_deploy",
                "params_train", "params_deploy", "flops_update", "flops_env_step", "update_ms", "widths",
                "train_flops_total", "prune_strength", "budget_target", "budget_expected", "budget_on",
                "budget_held"]


class EvaluationsCSV:
    """``evaluations.csv``: one ``eval`` row per evaluation (return mean and std, expected and actual parameter counts)
    and one ``prune`` row per pruning event (actual counts, FLOPs per update and per env step, measured update time
    before the event, widths per layer as JSON); both carry the matmul FLOPs of all gradient updates so far and, for a
    gated model, the strength ``α`` and, with a budget, the budget and the deployable cost expected, of the units on
    and of those the floor holds
    (:meth:`~xinet_rl.agents.xisac.XiSAC.budget_state`, in the budget's unit). Rows are flushed as they are written.

    :param path: the file; written with its header when new, appended to when it exists (a resumed run).
    """

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
                "train_flops_total": int(model.train_flops),
                **{f"budget_{k}" if k != "prune_strength" else k: round(v, 6 if k == "prune_strength" else 2)
                   for k, v in model.budget_state().items() if k != "model"}}

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
    last update when training ends).

    :param table: the run's ``evaluations.csv``.
    :param written: events of the model already written (a resumed run's).
    """

    def __init__(self, table: EvaluationsCSV, written: int = 0) -> None:
        super().__init__()
        self.table, self.written = table, written

    def flush(self) -> None:
        """Write the rows of the events not yet written."""
        events = self.model.prune_events
        while self.written < len(events):
            self.table.append_prune(events[self.written], self.model)
            self.written += 1

    def _on_rollout_start(self) -> None:
        self.flush()

    def _on_step(self) -> bool:
        self.flush()
        return True

    def _on_training_end(self) -> None:
        self.flush()


class Evaluate(BaseCallback):
    """Deterministic evaluation on a separate environment at every multiple of ``every`` steps of the run (also after
    a resume), written to ``evaluations.csv``, TensorBoard (``eval/``) and the progress bar.

    It runs at the start of a rollout, after the update of the step just taken, so the row for step ``S`` describes
    the model a checkpoint at ``S`` holds (and the one a run of ``S`` steps ends with). When training reaches its
    total it also evaluates the final policy (unless the last step was just evaluated), so that the final evaluation
    reaches TensorBoard and the progress bar too; a run stopped early (a signal) is not evaluated there.

    :param eval_env: the evaluation environment (not the training one).
    :param every: environment steps between evaluations.
    :param episodes: episodes per evaluation.
    :param table: the run's ``evaluations.csv``.
    :param progress: the run's progress bar, which shows the latest return, or ``None``.
    """

    def __init__(self, eval_env: gym.Env, every: int, episodes: int, table: EvaluationsCSV,
                 progress: "ProgressBar | None" = None) -> None:
        super().__init__()
        self.eval_env, self.every, self.episodes, self.table, self.progress = eval_env, every, episodes, table, progress
        # the evaluation environment's counters and RNG before the latest evaluation: the final cut's policy is
        # evaluated on the episodes the uncut one was (FinalCut)
        self.episodes_from: dict | None = None

    def _on_step(self) -> bool:
        return True

    def _on_rollout_start(self) -> None:
        step = self.model.num_timesteps
        if self.every > 0 and step > 0 and step % self.every == 0 and step != self.table.last_eval_step:
            self.evaluate(step)

    def _on_training_end(self) -> None:
        step = self.model.num_timesteps
        if step >= self.model._total_timesteps and step != self.table.last_eval_step:
            self.evaluate(step)

    def evaluate(self, step: int) -> dict:
        """Evaluate the model now, as the policy of ``step``: the row of ``evaluations.csv`` (returned), the
        ``eval/`` scalars of TensorBoard and the progress bar."""
        return self.report(step, *self.measure(step))

    def measure(self, step: int) -> tuple[dict, list[int]]:
        """Run the evaluation episodes for the policy of ``step`` and append its row of ``evaluations.csv``; returns
        the row and the episode lengths, for :meth:`report`. ``episodes_from`` keeps where the episodes began."""
        self.num_timesteps = step
        self.episodes_from = env_state(self.eval_env)[0]
        returns, lengths = evaluate_policy(self.model, self.eval_env, n_eval_episodes=self.episodes,
                                           deterministic=True, return_episode_rewards=True)
        return self.table.append_eval(step, np.asarray(returns), self.model), lengths

    def report(self, step: int, row: dict, lengths: list[int]) -> dict:
        """The ``eval/`` scalars of TensorBoard and the progress bar for the evaluation ``row`` of ``step``."""
        self.logger.record("eval/mean_reward", row["return_mean"])
        if "train_flops_total" in row:
            self.logger.record("eval/train_flops_total", row["train_flops_total"])
        self.logger.record("eval/return_std", row["return_std"])
        self.logger.record("eval/mean_ep_length", float(np.mean(lengths)))
        self.logger.dump(step)
        if self.progress is not None:
            self.progress.evaluated(step, row["return_mean"])
        return row


class FinalCut(BaseCallback):
    """The final cut (:meth:`~xinet_rl.agents.xisac.XiSAC.cut_off_units`: the units that are off, a budget's fit and
    ``final_deploy_params``), made when training reaches its total and, from ``final_cut_from`` of the total steps
    on, at every evaluation where the deployable policy is still above the size: training goes on with the cut
    policy, so that the next cut, and the final evaluation, find one that has adapted to the last (the units that
    remain take over the work of those cut; ``docs/method.md``, "Cutting during training").
    At each cut the policy as trained is evaluated at its step (a row of ``evaluations.csv``), cut, and the cut
    policy evaluated on the same episodes by :class:`Evaluate` (its row, TensorBoard and the progress bar), so the
    final evaluation is of the policy the run deploys. Placed after :class:`RecordPruning` (which has written the
    last update's events) and before :class:`Evaluate`.

    With ``final_cut_max_loss`` a cut is kept only if its mean return on validation episodes (as many as an
    evaluation has, the ones the evaluation environment runs next, so not those reported) is at least the uncut
    policy's there less that share of its size. :attr:`records` then holds, per cut, both returns, both deployable
    sizes, the action change and the validation returns (``summary.json``'s ``final_cut``). A run stopped (a signal)
    is not cut at its end.

    :param evaluation: the run's evaluations.
    :param pruning: the run's pruning rows, which write the cut's row.
    :param records: the cuts made so far (a resumed run's, from its checkpoint).
    """

    def __init__(self, evaluation: "Evaluate", pruning: RecordPruning, records: list[dict] | None = None) -> None:
        super().__init__()
        self.evaluation, self.pruning = evaluation, pruning
        self.records: list[dict] = list(records or [])

    @property
    def record(self) -> dict | None:
        """``summary.json``'s ``final_cut``: the size, each cut made, and the deployable size and return it ended
        at (``None`` where no cut was made)."""
        if not self.records:
            return None
        last = self.records[-1]
        return {"target": self.model.final_cut if self.model is not None else None, "cuts": self.records,
                "params_deploy": last["params_deploy"], "return": last["return"]}

    def _on_step(self) -> bool:
        return True

    def _on_rollout_start(self) -> None:
        model, every = self.model, self.evaluation.every
        step, total = model.num_timesteps, model._total_timesteps
        if model.final_cut is None or every <= 0 or step % every != 0 or step >= total or step == 0:
            return
        if step < model.config.final_cut_from * total or step == self.evaluation.table.last_eval_step:
            return
        if model.policy.param_counts()["deploy"] > model.final_cut:
            self._cut(step)

    def _on_training_end(self) -> None:
        model = self.model
        step = model.num_timesteps
        stop = getattr(model, "stop_requested", None)
        if step < model._total_timesteps or (model.budget is None and model.final_cut is None) or (stop and stop()):
            return  # a run stopped at its last step is cut when it is resumed (and finishes there)
        self._cut(step)

    def _cut(self, step: int) -> None:
        """Evaluate the policy as trained at ``step`` (unless done), cut it, evaluate the cut policy on the same
        episodes, and append the cut's record."""
        model, evaluation = self.model, self.evaluation
        table = evaluation.table
        uncut = None  # the uncut policy's evaluation, made here: reported where no cut follows
        if table.last_eval_step != step:  # else evaluated at this step already, on the episodes it was shown
            uncut = evaluation.measure(step)
        episodes, before = evaluation.episodes_from, table.last_eval["return_mean"]
        record = {"step": int(step), "params_deploy_before": model.policy.param_counts()["deploy"],
                  "return_before": before}
        accept = self._validation(record) if model.final_cut is not None else None
        if model.cut_off_units(accept=accept):
            self.pruning.flush()
            if episodes is not None:
                set_env_state(evaluation.eval_env, episodes, {})
            evaluation.evaluate(step)
        elif uncut is not None:
            evaluation.report(step, *uncut)
        record.update({"params_deploy": model.policy.param_counts()["deploy"],
                       "action_change": model.final_cut_change, "tolerance": model.final_cut_tolerance,
                       "return": table.last_eval["return_mean"]})
        self.records.append(record)

    def _validation(self, record: dict) -> Callable[[dict], bool] | None:
        """The check of a cut (``None`` without ``final_cut_max_loss``): its mean return on the validation episodes
        against the uncut policy's, each policy on the same episodes; each return goes into ``record``."""
        model, env, episodes = self.model, self.evaluation.eval_env, self.evaluation.episodes
        max_loss = model.config.final_cut_max_loss
        if max_loss is None:
            return None
        start = env_state(env)[0]

        def validation_return() -> float:
            set_env_state(env, start, {})
            returns, _ = evaluate_policy(model, env, n_eval_episodes=episodes, deterministic=True,
                                         return_episode_rewards=True)
            return float(np.mean(returns))

        uncut = validation_return()
        record["validation"] = {"episodes": episodes, "max_loss": max_loss, "return_uncut": uncut,
                                     "returns_cut": []}

        def accept(masks: dict) -> bool:
            with cut_applied(model.policy.gates(), masks):
                cut = validation_return()
            record["validation"]["returns_cut"].append(cut)
            return cut >= uncut - max_loss * abs(uncut)

        return accept


# SIGHUP: the terminal was closed (or the session ended); it stops a run like SIGTERM does, with a checkpoint
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def detach_from_closed_terminal() -> None:
    """Point stdout and stderr at ``os.devnull`` where they are a terminal that has hung up (it refuses even an
    empty write, with EIO; it no longer even passes ``isatty``), so that the progress bar and the closing message
    cannot turn a SIGHUP into a crash. Files and pipes are left alone."""
    devnull = None
    for fd in (1, 2):
        try:
            os.write(fd, b"")
        except OSError as exc:
            if exc.errno != errno.EIO:
                continue
            if devnull is None:
                devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)
    if devnull is not None:
        os.close(devnull)


class Checkpoints(BaseCallback):
    """Checkpoint every ``every`` steps and when SIGINT, SIGTERM or SIGHUP arrives, then stop.

    Checkpoints are taken at the start of a rollout, after the previous step's transition is stored and its update
    done, so that a resumed run continues exactly where the checkpoint left off.

    :param run_dir: the run directory (checkpoints go to its ``checkpoints/``).
    :param every: environment steps between checkpoints; 0: only on a signal.
    :param keep: the newest checkpoints kept.
    :param extra: called at each checkpoint: more metadata for it (the trainer's own state).
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
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        if hasattr(self.model, "stop_requested"):  # OFENet's pre-training stops within an update, not minutes later
            self.model.stop_requested = self._stop_requested

    def _handle(self, signum: int, frame: Any) -> None:
        if signum == getattr(signal, "SIGHUP", None):
            detach_from_closed_terminal()
        if self.signal is None:  # the first signal names the stop
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
        # a signal during the last update or the final evaluation still gets the checkpoint it was promised (a run
        # stopped by a signal has its checkpoint already, and stopped mid-step: no second one there)
        if self.signal is not None and not self.stopping and self.last_step != self.model.num_timesteps:
            self.model.save_checkpoint(self.run_dir, self.keep, self.extra() if self.extra else None)
            self.last_step = self.model.num_timesteps
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        if getattr(self.model, "stop_requested", None) == self._stop_requested:
            self.model.stop_requested = None

    def _stop_requested(self) -> bool:
        return self.signal is not None


class ProgressBar(BaseCallback):
    """The progress of a run on stderr, one bar per phase, each with its own count, rate and ETA, so that neither
    the fast steps of random actions nor OFENet's pre-training (during which no step is taken) distorts the rate of
    training or its ETA:

    - ``random actions``: the steps until ``learning_starts``;
    - ``OFENet pre-training``: its ``ofenet_pretrain_steps`` updates, made in the agent's first ``train`` call (the
      agent calls :meth:`pretrain_update` after each one: the bar sets itself as the agent's ``pretrain_hook`` for
      the length of ``learn``);
    - ``training``: the steps to the total.

    Each bar also shows the latest evaluation (the final one too, which :class:`Evaluate` makes when training
    reaches its total) and the deployable and training parameter counts, read again at each pruning event.

    :param total: the run's total environment steps.
    :param file: where the bars are drawn; default stderr.
    """

    PHASES = {"random": "random actions", "pretrain": "OFENet pre-training", "training": "training"}

    def __init__(self, total: int, file: Any = None) -> None:
        super().__init__()
        self.total, self.file = total, file
        self.bar: tqdm | None = None
        self.phase: str | None = None
        self.latest_return: float | None = None
        self.latest_step: int | None = None
        self.params: dict[str, int] | None = None
        self._events = 0

    def _open(self, phase: str, total: int, initial: int, unit: str) -> None:
        """Close the bar of the phase that ended and open a fresh one: its rate and ETA count from now."""
        if self.bar is not None:
            self.bar.close()
        self.phase = phase
        self.bar = tqdm(total=total, initial=initial, unit=unit, desc=self.PHASES[phase], dynamic_ncols=True,
                        file=self.file)
        self._show()

    def _show(self) -> None:
        parts = []
        if self.latest_return is not None:
            parts.append(f"eval {self.latest_return:.1f} @{self.latest_step}")
        if self.params is not None:
            parts.append(f"params deploy {self.params['deploy']:,} train {self.params['train']:,}")
        if self.bar is not None and parts:
            self.bar.set_postfix_str(" | ".join(parts))

    def _read_params(self) -> None:
        counts = getattr(self.model.policy, "param_counts", None)
        self.params = dict(counts()) if counts is not None else sb3_param_counts(self.model)

    def _on_training_start(self) -> None:
        self._events = len(getattr(self.model, "prune_events", ()))
        self._read_params()
        random_steps = min(int(getattr(self.model, "learning_starts", 0)), self.total)
        if self.num_timesteps < random_steps:
            self._open("random", random_steps, self.num_timesteps, "step")
        else:
            self._open("training", self.total, self.num_timesteps, "step")
        if hasattr(self.model, "pretrain_hook"):
            self.model.pretrain_hook = self.pretrain_update

    def pretrain_update(self, done: int, due: int) -> None:
        """Called by the agent after each of its ``due`` pre-training updates (``done`` so far)."""
        if self.phase != "pretrain":
            if self.bar is not None and self.phase == "training":
                self.bar.leave = False  # opened before pre-training began (learning_starts 0, or a resume)
            self._open("pretrain", due, 0, "update")
        assert self.bar is not None
        self.bar.update(done - self.bar.n)
        if done >= due:
            self._open("training", self.total, self.model.num_timesteps, "step")

    def evaluated(self, step: int, return_mean: float) -> None:
        """Show the return of the evaluation of the policy of ``step``."""
        self.latest_return, self.latest_step = float(return_mean), int(step)
        self._show()

    def _on_rollout_start(self) -> None:
        if self.phase == "random" and self.model.num_timesteps > getattr(self.model, "learning_starts", 0):
            self._open("training", self.total, self.model.num_timesteps, "step")  # no pre-training came

    def _on_step(self) -> bool:
        assert self.bar is not None
        step = min(self.num_timesteps, self.bar.total) if self.phase == "random" else self.num_timesteps
        if step != self.bar.n:
            self.bar.update(step - self.bar.n)
        events = getattr(self.model, "prune_events", None)
        if events is not None and len(events) != self._events:  # a pruning event: the counts changed
            self._events = len(events)
            self._read_params()
            self._show()
        return True

    def _on_training_end(self) -> None:
        if getattr(self.model, "pretrain_hook", None) == self.pretrain_update:
            self.model.pretrain_hook = None
        if self.bar is not None:
            self.num_timesteps = self.model.num_timesteps
            self._on_step()  # the last step, and the pruning events of the last update
            self.bar.close()
            self.bar = None
