"""How far the deployed actions move as a trained policy is cut, lowest keep probability first (the order of the final
cut, ``xinet_rl/final_cut.py``): the deterministic policy is rolled out for 3,000 steps (environment seeded 123) and,
as each unit's ``π`` is set to 0 in turn, the root-mean-square change of its actions on those states is printed at
the sizes asked for (shares of the unpruned deployable policy).

Usage: python scripts/cut_curve.py RUN_DIR [RUN_DIR ...] [--sizes 0.22 0.2 0.1]
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from xinet_rl import XiSAC
from xinet_rl.budget import deploy_cost
from xinet_rl.envs import make_env
from xinet_rl.structure import is_deployed


def rollout_states(model: XiSAC, env_id: str, steps: int = 3000) -> torch.Tensor:
    env = make_env(env_id, seed=123)
    obs, _ = env.reset(seed=123)
    states = []
    for _ in range(steps):
        states.append(obs)
        action, _ = model.predict(obs, deterministic=True)
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()
    return torch.as_tensor(np.array(states), dtype=torch.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", type=Path, nargs="+")
    parser.add_argument("--sizes", type=float, nargs="+", default=[0.22, 0.21, 0.2, 0.19, 0.12, 0.11, 0.1, 0.09, 0.08])
    args = parser.parse_args()
    torch.set_num_threads(1)
    for run_dir in args.run_dirs:
        summary = json.loads((run_dir / "summary.json").read_text())
        initial = summary["params_initial"]["deploy"]
        model = XiSAC.load(run_dir / "model.safetensors", device="cpu")
        p = model.policy
        gates, structure = p.gates(), p.structure()
        states = rollout_states(model, summary["env"])
        with torch.no_grad():
            reference = p._act(states, True)
        candidates = sorted((float(gate.keep_prob[i]), group, i) for group, gate in gates.items() if is_deployed(group)
                            for i in range(gate.units) if float(gate.keep_prob[i]) > 0)
        widths = {group: int((gate.keep_prob > 0).sum()) for group, gate in gates.items()}
        curve = []
        for count, (keep_prob, group, index) in enumerate(candidates, 1):
            with torch.no_grad():
                gates[group].keep_prob[index] = 0.0
                change = float((p._act(states, True) - reference).square().mean().sqrt())
            widths[group] -= 1
            curve.append((count, keep_prob, float(deploy_cost(structure, widths, "params")) / initial, change))
        for size in args.sizes:
            row = next((c for c in curve if c[2] <= size), None)
            if row is not None:
                print(json.dumps({"run": str(run_dir), "size": size, "units_cut": row[0], "last_keep_prob": round(row[1], 4),
                                  "deploy_fraction": round(row[2], 4), "action_rms_change": round(row[3], 4)}))


if __name__ == "__main__":
    main()
