"""What each loss credits OFENet's units with, against what they cost, at a checkpoint of a run.

For every OFENet block: the mean over its units (those with ``π > 0``) of each part of the ``π`` gradient, sign
flipped so that a positive number is credit, and how many units each part alone (and all together) credits with less
than their cost (those whose ``π`` that credit would drive down) (how much the loss rises without the unit, divided by that loss's scale
``s_k``, as the gate step uses it), next to the unit's cost ``α ∂C/∂π``. The auxiliary part is what the default
(``ofenet_gate_credit`` "aux") uses; the critic and actor parts are what "consumers" adds. Whatever the run's setting,
all three are measured, each averaged over the given number of minibatches from the checkpoint's replay buffer (the
updates these passes come with train the weights: the model is not saved).

Usage: python scripts/credit_parts.py CHECKPOINT_DIR [--batches 20]
"""

import argparse
import json
from collections import defaultdict
from pathlib import Path

import torch

from xinet_rl import XiSAC
from xinet_rl.envs import make_env
from xinet_rl.structure import OFENET_BLOCKS, network_of


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args()
    meta = json.loads((args.checkpoint / "meta.json").read_text())
    model, _ = XiSAC.from_checkpoint(args.checkpoint, make_env(meta["env_id"], seed=0), device="cpu")
    p, updater = model.policy, model.updater
    updater.replay_buffer = model.replay_buffer
    updater.credit_consumers = True  # measure the consumers' parts whatever the run used
    parts: dict[str, dict[str, list[torch.Tensor]]] = defaultdict(lambda: defaultdict(list))
    collect = updater._collect

    def recording_collect(keep_prob_grads, prefixes, grads, scale):  # in the SAC step: the critic and actor parts
        if set(prefixes) <= set(OFENET_BLOCKS):
            name = "critic" if len(prefixes) == 2 else "actor"
            for group, grad in zip(updater._groups(prefixes), grads):
                parts[group][name].append(-(grad / scale).detach())
        collect(keep_prob_grads, prefixes, grads, scale)

    for _ in range(args.batches):
        data = model.replay_buffer.sample(model.batch_size)
        aux = {}
        updater.ofenet_step(model.batch_size, update_gates=False, keep_prob_grads=aux, data=data)
        for group in updater._groups(OFENET_BLOCKS):
            parts[group]["aux"].append(-aux[group].detach())
        updater._collect = recording_collect
        updater.sac_step(model.batch_size, keep_prob_grads={}, data=model.replay_buffer.sample(model.batch_size))
        del updater._collect  # the class's own again
    gates = p.gates()
    costs = p.regularizer.unit_costs(p.structure(), {g: gate.keep_prob for g, gate in gates.items()})
    out = {"checkpoint": str(args.checkpoint), "prune_strength": float(p.regularizer.strength)}
    for block in OFENET_BLOCKS:
        groups = [g for g in gates if network_of(g) == block]
        alive = {g: gates[g].keep_prob.detach() > 0 for g in groups}
        row = {"units": int(sum(int(a.sum()) for a in alive.values())),
               "mean_keep_prob": float(torch.cat([gates[g].keep_prob.detach()[alive[g]] for g in groups]).mean())}
        cost = torch.cat([costs[g].expand(int(alive[g].sum())).float() for g in groups])
        total = torch.zeros_like(cost)
        for name in ("aux", "critic", "actor"):
            values = [torch.stack(parts[g][name]).mean(0)[alive[g]] for g in groups if parts[g][name]]
            if values:
                credit = torch.cat(values)
                total += credit
                row[f"credit_{name}"] = float(credit.mean())
                row[f"units_{name}_below_cost"] = int((credit < cost).sum())
        row["cost"] = float(cost.mean())
        row["units_all_below_cost"] = int((total < cost).sum())
        out[block] = row
    print(json.dumps(out))


if __name__ == "__main__":
    main()
