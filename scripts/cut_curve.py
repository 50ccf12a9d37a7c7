"""How far the deployed actions move as a trained policy is cut, in the final cut's order (``xinet_rl/final_cut.py``:
the units that move the actions least per deployable parameter first) and lowest keep probability ``π`` first (the
order it had until commit d492533): the deterministic policy is rolled out for 3,000 steps (environment seeded 123)
and the root-mean-square change of its actions on those states is printed at the sizes asked for (shares of the
unpruned deployable policy).

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
from xinet_rl.final_cut import cut_keep
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


def lowest_pi_curve(model: XiSAC, states: torch.Tensor, reference: torch.Tensor, initial: float) -> list[tuple]:
    """(deployable fraction, π of the unit, action change) as each unit on is set to 0, lowest π first."""
    p = model.policy
    gates, structure = p.gates(), p.structure()
    saved = {group: gate.keep_prob.detach().clone() for group, gate in gates.items()}
    candidates = sorted((float(gate.keep_prob[i]), group, i) for group, gate in gates.items() if is_deployed(group)
                        for i in range(gate.units) if float(gate.keep_prob[i]) > 0)
    widths = {group: int((gate.keep_prob > 0).sum()) for group, gate in gates.items()}
    curve = []
    with torch.no_grad():
        for keep_prob, group, index in candidates:
            gates[group].keep_prob[index] = 0.0
            widths[group] -= 1
            change = float((p._act(states, True) - reference).square().mean().sqrt())
            curve.append((float(deploy_cost(structure, widths, "params")) / initial, keep_prob, change))
        for group, gate in gates.items():
            gate.keep_prob.copy_(saved[group])
    return curve


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
        states = rollout_states(model, summary["env"])
        with torch.no_grad():
            reference = p._act(states, True)
        by_pi = lowest_pi_curve(model, states, reference, initial)
        keep = {group: gate.keep_prob.detach() > 0 for group, gate in p.gates().items()}
        for size in args.sizes:
            row = {"run": str(run_dir), "size": size}
            cut = next((c for c in by_pi if c[0] <= size), None)
            if cut is not None:
                row["lowest_pi"] = {"deploy_fraction": round(cut[0], 4), "last_keep_prob": round(cut[1], 4),
                                    "action_rms_change": round(cut[2], 4)}
            masks, change = cut_keep(keep, p.gates(), p.structure(), size * initial, lambda o: p._act(o, True),
                                     states, float("inf"), model.config.min_units)
            fraction = float(deploy_cost(p.structure(), {g: int(m.sum()) for g, m in masks.items()}, "params"))
            row["measured"] = {"deploy_fraction": round(fraction / initial, 4), "action_rms_change": round(change, 4)}
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
