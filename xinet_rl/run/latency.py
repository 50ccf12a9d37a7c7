"""The one timer of batch-1 action latency (what acting costs per environment step), so that ``xinet-bench``,
``xinet-eval`` and the comparison report measure every policy the same way."""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np


def action_latency_ms(act: Callable[[np.ndarray], Any], obs: np.ndarray, calls: int = 300, warmup: int = 20) -> float:
    """Median wall time of one call of ``act`` on a single observation, in milliseconds.

    :param act: what acting is, e.g. ``lambda o: model.predict(o, deterministic=True)`` or a deployed module's call
    :param obs: one observation (no batch dimension)
    :param calls: timed calls
    :param warmup: untimed calls first (caches, lazy initialisation, allocator)
    :return: the median of the timed calls, in milliseconds
    """
    for _ in range(warmup):
        act(obs)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        act(obs)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))
