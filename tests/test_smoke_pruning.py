"""The fast-pruning smoke config: a real HalfCheetah run that removes units from OFENet, actor and critics."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from xinet_rl import XiSAC

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"


@pytest.mark.slow  # a real HalfCheetah run: about 10 minutes on one loaded core
def test_smoke_config_prunes_every_network(tmp_path):
    out = tmp_path / "smoke"
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    proc = subprocess.run([sys.executable, "-m", "xinet_rl.cli.train", "--env", "HalfCheetah-v4", "--config", str(SMOKE),
                           "--out", str(out), "--no-progress", "--device", "cpu"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800)  # a hang guard only
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    initial, final = summary["widths_initial"], summary["widths_final"]
    for network in ("ofenet_state", "ofenet_state_action", "actor", "critic1", "critic2"):
        assert sum(final[network]) < sum(initial[network]), network
    assert summary["params_final"]["train"] < summary["params_initial"]["train"]
    assert summary["flops_final"]["update"] < summary["flops_initial"]["update"]
    assert summary["flops_final"]["env_step"] < summary["flops_initial"]["env_step"]
    with (out / "evaluations.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    prunes = [r for r in rows if r["event"] == "prune"]
    assert len(prunes) == summary["prune_events"] >= 1
    # Each prune row reports the model right after the event; counts only go down.
    trains = [int(r["params_train"]) for r in prunes]
    assert trains == sorted(trains, reverse=True)
    assert json.loads(prunes[-1]["widths"]) == final and float(prunes[0]["update_ms"]) > 0
    # The pruned model loads from its widths alone and has the final counts.
    model = XiSAC.load(out / "model.safetensors", device="cpu")
    assert model.policy.param_counts() == summary["params_final"]
    assert model.policy.widths.networks() == final


def test_a_pruning_event_in_the_last_update_gets_its_row(tmp_path):
    """The only pruning check of this run is in its last update (update 100 at step 200): its row is written when
    training ends, not lost because no further step comes."""
    from xinet_rl.callbacks import EvaluationsCSV, RecordPruning
    from xinet_rl.envs import make_env

    model = XiSAC(make_env("HalfCheetah-v4", seed=0), seed=0, device="cpu", learning_starts=100, batch_size=32,
                  buffer_size=1000, ofenet_pretrain_steps=0, ofenet_layers=2, ofenet_units=8, actor_widths=[16, 16],
                  critic_widths=[16, 16], prune_start=100, prune_interval=100, prune_patience=1)
    model.policy.actor.trunk.gates[0].keep_prob.data[:4] = 0.0  # four units at 0: removed at the first check
    table = EvaluationsCSV(tmp_path / "evaluations.csv")
    model.learn(200, callback=RecordPruning(table))
    assert [e["n_updates"] for e in model.prune_events] == [100]
    with (tmp_path / "evaluations.csv").open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["event"] == "prune"]
    assert [r["step"] for r in rows] == ["200"]
