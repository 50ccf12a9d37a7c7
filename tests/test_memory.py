"""``keep_freed_memory``: the memory freed by one gradient update is reused by the next without page faults."""

import subprocess
import sys

import pytest

PROBE = """
import resource, sys, torch
from xinet_rl.memory import keep_freed_memory, set_malloc_thresholds
if sys.argv[1] == "keep":
    assert keep_freed_memory()
else:  # glibc's initial thresholds, pinned: its default adapts them to the allocation history, run by run
    assert set_malloc_thresholds(128 * 1024, 128 * 1024)
from xinet_rl import XiSAC
from xinet_rl.envs import make_env
torch.set_num_threads(1)
model = XiSAC(make_env("HalfCheetah-v4", seed=0), seed=0, device="cpu", learning_starts=300, buffer_size=1000,
              ofenet_pretrain_steps=0)
model.learn(310)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    model.train(1, 256)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
"""


def _faults_per_update(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
@pytest.mark.slow
def test_updates_stop_faulting_pages_in():
    default, kept = _faults_per_update("glibc initial"), _faults_per_update("keep")
    assert default > 100  # every block above 128 KiB is a fresh mapping, faulted in page by page
    assert kept < default / 5
