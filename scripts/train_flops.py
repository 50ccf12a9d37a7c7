"""``train_flops_total`` of a finished run, rebuilt from its ``config.yaml``, ``summary.json`` and
the widths of its ``prune`` rows.

For runs made before the counter existed (their ``summary.json`` lacks the key). Exact, not an estimate: a run's
structure changes only at pruning events, whose rows carry the widths and the step; update ``k`` (0-based) runs the
gate step when ``k % gate_update_every == 0`` and happens at environment step ``learning_starts + k + 1``. A run made
with the counter gives the same figure (the script prints both when the summary has one).

Usage: python scripts/train_flops.py RUN_DIR [RUN_DIR ...] [--write]   (--write adds the key to summary.json)
"""

import csv
import json
import sys
from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import yaml

from xinet_rl.cost import pretrain_flops, update_flops
from xinet_rl.io import write_text_atomic
from xinet_rl.structure import Widths, build_structure


def _widths(base: Widths, networks: dict[str, list[int]]) -> Widths:
    return replace(base, state=networks["ofenet_state"], state_action=networks["ofenet_state_action"],
                   actor=networks["actor"], critic1=networks["critic1"], critic2=networks["critic2"])


def _gate_steps(start: int, stop: int, every: int) -> int:
    """How many update indices in ``[start, stop)`` are multiples of ``every``."""
    return max(0, (stop - 1) // every - (start - 1) // every) if stop > start else 0


def train_flops_total(run_dir: Path) -> int:
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    env = gym.make(config["env"])
    obs_dim, act_dim = int(np.prod(env.observation_space.shape)), int(np.prod(env.action_space.shape))
    aux_dim = (config["aux_target_dim"] or obs_dim) if config["ofenet_layers"] > 0 else 0
    base = Widths(obs_dim, act_dim, aux_dim)
    batch, every, gated = config["batch_size"], config["gate_update_every"], config["gated"]
    n_updates = max(0, summary["total_steps"] - config["learning_starts"])
    with (run_dir / "evaluations.csv").open(newline="") as handle:
        events = [(int(r["step"]) - config["learning_starts"], json.loads(r["widths"]))
                  for r in csv.DictReader(handle) if r["event"] == "prune"]
    widths = _widths(base, summary["widths_initial"])
    total = 0
    if n_updates > 0 and config["ofenet_layers"] > 0:
        total += config["ofenet_pretrain_steps"] * pretrain_flops(build_structure(widths), batch, gated)
    start = 0
    for stop, networks in events + [(n_updates, None)]:
        structure = build_structure(widths)
        gate = _gate_steps(start, stop, every) if gated else 0
        total += gate * update_flops(structure, batch, gated) + (stop - start - gate) * update_flops(structure, batch,
                                                                                                      gated=False)
        if networks is not None:
            widths, start = _widths(base, networks), stop
    return total


def main() -> None:
    write = "--write" in sys.argv[1:]
    for arg in [a for a in sys.argv[1:] if a != "--write"]:
        run_dir = Path(arg)
        total = train_flops_total(run_dir)
        path = run_dir / "summary.json"
        summary = json.loads(path.read_text())
        counted = summary.get("train_flops_total")
        print(f"{run_dir}\t{total}" + ("" if counted is None else f"\tcounted {counted}"))
        if write and counted is None:
            summary["train_flops_total"] = total
            write_text_atomic(path, json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
