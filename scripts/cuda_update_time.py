"""On a GPU: the update time that training logs (``update_ms``), against the host's wall time per step, before and
after a pruning event:

    python scripts/cuda_update_time.py [--steps 600]

A short fixed-seed HalfCheetah-v4 run (1,000 random steps, 100 OFENet pre-training updates), ``--steps`` steps with
updates, half the units of every gated layer pruned, ``--steps`` more. At every read of the graphed update's losses
(every 100 updates) it prints the logged GPU time per update (CUDA events around each timed update) and, for
comparison, the time from the first timed update's start to the last one's end divided by their number (which also
counts the gaps between steps), with the host's wall time per step over the same 100 steps.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from xinet_rl import XiSAC
from xinet_rl.envs import make_env
from xinet_rl.pruning import prune_to_fraction


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    args = parser.parse_args()
    model = XiSAC(make_env("HalfCheetah-v4", seed=0), seed=0, device="cuda", learning_starts=1000,
                  ofenet_pretrain_steps=100, buffer_size=10_000, prune_start=10**9)
    model.learn(1001)
    graphed = model.graphed
    rows: list[dict] = []
    read = graphed.read
    clock = {"t": time.perf_counter()}

    def recording_read():
        n = graphed._timed
        window = (graphed._timers[0][0].elapsed_time(graphed._timers[n - 1][1]) / n) if n else None
        out = read()
        now = time.perf_counter()
        rows.append({"update": model._n_updates, "logged_ms": None if out[2] is None else 1000 * out[2],
                     "window_ms": window, "host_ms_per_step": 1000 * (now - clock["t"]) / model.check_every})
        clock["t"] = now
        return out

    graphed.read = recording_read
    for phase in ("before pruning", "after pruning"):
        if phase == "after pruning":
            prune_to_fraction(model.policy, 0.5)
        start = len(rows)
        model.learn(args.steps, reset_num_timesteps=False)
        torch.cuda.synchronize()
        print(phase)
        for row in rows[start + 1:]:  # the first read's window may include the warm-up of new graphs
            print(f"  update {row['update']:6d}: logged {row['logged_ms'] or float('nan'):6.3f} ms/update, window "
                  f"{row['window_ms'] or float('nan'):6.3f} ms, host {row['host_ms_per_step']:6.3f} ms/step")
        logged = [r["logged_ms"] for r in rows[start + 1:] if r["logged_ms"] is not None]
        print(f"  median logged {np.median(logged):.3f} ms/update; model.update_seconds "
              f"{1000 * (model.update_seconds or float('nan')):.3f} ms")


if __name__ == "__main__":
    main()
