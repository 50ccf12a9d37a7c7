"""How much return a trained policy loses when it is cut to a smaller deployable size after training: its units are
removed lowest keep probability first (``budget.fit_keep``, what a budgeted run does at its end) until the deployable
policy (state block and actor) has at most the given share of the unpruned one's parameters. Each cut and the uncut
model are evaluated on the same 10 episodes (the environment seeded ``seed + 10000``, as the trainer's evaluations).

Usage: python scripts/fit_deploy.py RUN_DIR FRACTION [FRACTION ...]   (e.g. ``... runs/xinet_s0 0.1 0.08``)
"""

import argparse
import json
from pathlib import Path

import torch
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

from xinet_rl import XiSAC
from xinet_rl.budget import fit_keep
from xinet_rl.envs import make_env
from xinet_rl.pruning import prune, with_min_units


def evaluate(model: XiSAC, env_id: str, seed: int, episodes: int) -> tuple[float, float]:
    env = Monitor(make_env(env_id, seed=seed + 10_000))
    mean, std = evaluate_policy(model, env, n_eval_episodes=episodes, deterministic=True)
    env.close()
    return float(mean), float(std)


def cut(model: XiSAC, target: float) -> None:
    """Remove the units that are off, then the lowest-``π`` ones until the deployable policy has ``target``
    parameters at most."""
    p, min_units = model.policy, model.config.min_units
    on = {g: gate.keep_prob.detach() > model.config.prune_eps for g, gate in p.gates().items()}
    keep = fit_keep(with_min_units(on, p.gates(), min_units), p.gates(), p.structure(), "params", target, min_units)
    prune(p, keep)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("fractions", type=float, nargs="+", help="shares of the unpruned deployable parameters")
    parser.add_argument("--episodes", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    summary = json.loads((args.run_dir / "summary.json").read_text())
    env_id, seed, initial = summary["env"], int(summary["seed"]), summary["params_initial"]["deploy"]
    for fraction in [None, *args.fractions]:
        model = XiSAC.load(args.run_dir / "model.safetensors", device="cpu")
        if fraction is not None:
            cut(model, fraction * initial)
        deploy = model.policy.param_counts()["deploy"]
        mean, std = evaluate(model, env_id, seed, args.episodes)
        widths = model.policy.widths.networks()
        print(json.dumps({"run": args.run_dir.name, "cut_to": fraction, "deploy": deploy,
                          "deploy_fraction": round(deploy / initial, 4), "return": round(mean, 1),
                          "return_std": round(std, 1), "state_units": sum(widths["ofenet_state"]),
                          "actor": widths["actor"]}), flush=True)


if __name__ == "__main__":
    main()
