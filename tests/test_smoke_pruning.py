"""The fast-pruning smoke config: a real HalfCheetah run that removes units from OFENet, actor and critics."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

from xinet_rl import XiSAC

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"


def test_smoke_config_prunes_every_network(tmp_path):
    out = tmp_path / "smoke"
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    proc = subprocess.run([sys.executable, "-m", "xinet_rl.cli.train", "--env", "HalfCheetah-v4", "--config", str(SMOKE),
                           "--out", str(out), "--no-progress", "--device", "cpu"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
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
