"""Peak resident memory of a run with a full 10^6-transition replay buffer (Humanoid-v4 by default).

    python scripts/memory_replay.py [--env Humanoid-v4] [--buffer 1000000] [--fill N] [--updates 200] [--json FILE]

Fills the buffer with ``--fill`` random-action transitions (every page of it is touched), runs ``--updates``
gradient updates, writes one checkpoint (which streams the buffer to disk), and reports the peak resident set size
against the buffer's raw size (the bytes of its float32 arrays) plus the model (parameters, buffers and optimizer
state). Then a fresh process resumes from that checkpoint and takes ``--updates`` more updates, and its peak is
reported the same way. The target of the speed issue is ``peak <= 1.5 x (raw buffer + model)``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from xinet_rl import XiSAC
from xinet_rl.envs import make_env
from xinet_rl.memory import keep_freed_memory


def tensor_bytes(model: XiSAC) -> int:
    """Bytes of the model's tensors: the policy's state dict and its optimizers' states (``get_parameters``)."""
    def size(value) -> int:
        if isinstance(value, torch.Tensor):
            return value.numel() * value.element_size()
        if isinstance(value, dict):
            return sum(size(v) for v in value.values())
        if isinstance(value, (list, tuple)):
            return sum(size(v) for v in value)
        return 0
    return size(model.get_parameters())


def peak_rss_bytes() -> int:
    """This process's peak resident set (Linux ``VmHWM``; unlike ``ru_maxrss`` it starts afresh after ``exec``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def resume_peak(checkpoint: Path, env_id: str, updates: int) -> int:
    """Peak RSS of a fresh process that resumes from ``checkpoint`` and trains ``updates`` more steps."""
    code = ("import sys, torch\n"
            f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
            "from memory_replay import peak_rss_bytes\n"
            "from xinet_rl import XiSAC\nfrom xinet_rl.envs import make_env\ntorch.set_num_threads(1)\n"
            "from xinet_rl.memory import keep_freed_memory\nkeep_freed_memory()\n"
            f"model, _ = XiSAC.from_checkpoint({str(checkpoint)!r}, make_env({env_id!r}, seed=0), device='cpu')\n"
            f"model.learn({updates}, reset_num_timesteps=False)\n"
            "print(peak_rss_bytes())\n")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return int(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="Humanoid-v4")
    parser.add_argument("--buffer", type=int, default=1_000_000)
    parser.add_argument("--fill", type=int, default=None, help="random transitions stored (default: the buffer size)")
    parser.add_argument("--updates", type=int, default=200)
    parser.add_argument("--optimize-memory-usage", action="store_true",
                        help="SB3's option: next observations are not stored (see docs/method.md)")
    parser.add_argument("--json")
    args = parser.parse_args()
    fill = args.fill or args.buffer
    torch.set_num_threads(1)
    keep_freed_memory()  # as every xinet command does: the memory it keeps counts in the peak
    start_rss = peak_rss_bytes()
    started = time.perf_counter()
    model = XiSAC(make_env(args.env, seed=0), seed=0, device="cpu", buffer_size=args.buffer, learning_starts=fill,
                  ofenet_pretrain_steps=0, prune_start=10**9,
                  optimize_memory_usage=args.optimize_memory_usage)
    model.learn(fill + args.updates)
    buffer = model.replay_buffer
    raw = sum(getattr(buffer, k).nbytes for k in buffer.stored_fields())
    dtypes = {k: str(getattr(buffer, k).dtype) for k in buffer.stored_fields()}
    model_bytes = tensor_bytes(model)
    with tempfile.TemporaryDirectory() as run_dir:
        checkpoint = model.save_checkpoint(run_dir, keep=1)
        peak = peak_rss_bytes()
        del model, buffer
        resumed = resume_peak(checkpoint, args.env, args.updates)
    result = {"env": args.env, "buffer_size": args.buffer, "optimize_memory_usage": args.optimize_memory_usage,
              "filled": fill, "updates": args.updates,
              "dtypes": dtypes,
              "raw_buffer_bytes": raw, "model_bytes": model_bytes, "rss_before_bytes": start_rss,
              "peak_rss_bytes": peak, "peak_over_raw_plus_model": round(peak / (raw + model_bytes), 3),
              "resume_peak_rss_bytes": resumed,
              "resume_peak_over_raw_plus_model": round(resumed / (raw + model_bytes), 3),
              "seconds": round(time.perf_counter() - started, 1)}
    gib = 2**30
    print(f"{args.env}: buffer {args.buffer:,} ({fill:,} filled), dtypes {result['dtypes']}")
    print(f"raw buffer {raw / gib:.3f} GiB, model {model_bytes / 2**20:.1f} MiB, RSS at start {start_rss / gib:.3f} GiB,"
          f" peak RSS {peak / gib:.3f} GiB = {result['peak_over_raw_plus_model']} x (raw buffer + model)"
          f" [target <= 1.5]")
    print(f"resumed from the checkpoint in a fresh process: peak RSS {resumed / gib:.3f} GiB = "
          f"{result['resume_peak_over_raw_plus_model']} x (raw buffer + model)")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
