"""Check that a change leaves training unchanged: the losses of a short fixed-seed run, here and at another commit.

    python scripts/same_losses.py --against 3c24830 [--variant unpruned|xinet|pruning] [--updates 100]

Checks the other commit out into a temporary git worktree, runs the same short HalfCheetah-v4 run (1,000 random
steps, 50 OFENet pre-training updates, then ``--updates`` SAC updates, seed 0, 1 thread) with both versions of the
package, and compares the losses of every update (as ``train`` records them for the logger) and the final weights
bit for bit. ``pruning`` is ``xinet`` at a strength and schedule that prune units during the run (the widths at the
end are printed), so the check spans pruning events. Only public behaviour is read (``learn``, the logger, the
state dict), so the check works across refactors of the update. Exit code 0 when identical, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

RUN = """
import json, sys, torch
sys.path.insert(0, {root!r})
from xinet_rl import XiSAC
from xinet_rl.envs import make_env
torch.set_num_threads(1)
variant = {variant!r}
# pi_lr: gate_lr's former name, which every commit reads
schedule = (dict(prune_strength=3.0, prune_start=10, prune_interval=10, prune_patience=1, pi_lr=0.05)
            if variant == "pruning" else dict(prune_start=10**9))
model = XiSAC(make_env("HalfCheetah-v4", seed=0), seed=0, device="cpu", learning_starts=1000, ofenet_pretrain_steps=50,
              buffer_size=5000, gated=variant != "unpruned", **schedule)
losses = []
train = model.train
def recording(gradient_steps, batch_size=256):  # one update per call (train_freq 1, gradient_steps 1)
    train(gradient_steps, batch_size)
    values = model.logger.name_to_value
    losses.append([float(values[k]) for k in sorted(values) if k.startswith("train/") and k != "train/n_updates"])
model.train = recording
model.learn(1000 + {updates})
weights = {{(k[:-3] + ".keep_prob" if k.endswith(".pi") else k): v.detach().flatten().tolist()  # the gates' old name
           for k, v in model.policy.state_dict().items() if v.is_floating_point()}}
print(json.dumps({{"losses": losses, "weights": weights, "widths": model.policy.widths.networks(),
                  "events": len(model.prune_events)}}))
"""


def run_at(root: Path, variant: str, updates: int) -> dict:
    code = RUN.format(root=str(root), variant=variant, updates=updates)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, help="commit to compare with")
    parser.add_argument("--variant", choices=("unpruned", "xinet", "pruning"), default="unpruned")
    parser.add_argument("--updates", type=int, default=100)
    args = parser.parse_args()
    repo = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        other = Path(tmp) / "other"
        subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", str(other), args.against], check=True,
                       capture_output=True)
        try:
            theirs_run = run_at(other, args.variant, args.updates)
        finally:
            subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(other)], check=False,
                           capture_output=True)
    ours_run = run_at(repo, args.variant, args.updates)
    ours, theirs = ours_run["losses"], theirs_run["losses"]
    same_weights = ours_run["weights"] == theirs_run["weights"]
    differing = [i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b]
    same = len(ours) == len(theirs) and not differing and same_weights
    if same:
        verdict = "losses and final weights identical bit for bit"
    else:  # how far apart: rounding-level changes stay near float32 precision for a while, then drift
        def gap(upto: int) -> float:
            return max((abs(a - b) / max(abs(a), abs(b), 1e-12) for x, y in zip(ours[:upto], theirs[:upto])
                        for a, b in zip(x, y)), default=0.0)
        verdict = (f"first differing update {differing[:1] or 'count'}; largest relative difference of a loss "
                   f"{gap(10):.1e} over the first 10 updates, {gap(len(ours)):.1e} over all")
    if not differing and len(ours) == len(theirs) and not same_weights:
        verdict = "losses identical, final weights differ"
    print(f"{args.variant}: {len(ours)} updates here, {len(theirs)} at {args.against}; {verdict}; "
          f"{ours_run['events']} pruning events here, {theirs_run['events']} there; widths here {ours_run['widths']}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
