"""Keep freed tensor memory mapped in the process (glibc ``malloc`` settings), so updates stop faulting pages in.

An update allocates and frees tensors of up to a few MiB (the joint masks, DenseNet concatenations, the estimator
passes). By default glibc serves a block above its mmap threshold with a fresh mapping and gives the top of the heap
back to the kernel as soon as more than its trim threshold is free (both thresholds adapt to the largest freed block),
so updates fault the same pages in again and the kernel zeroes them: 34 to 347 page faults per update of the gated
HalfCheetah model (the thresholds adapt to the allocation history, so it varies run by run), a handful with the
settings below (``docs/method.md``). The memory kept is what an update
already used at its peak, so the peak resident size does not grow.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 << 20  # glibc's ceiling for the mmap threshold on 64-bit systems


def keep_freed_memory(trim_threshold: int = 1 << 30) -> bool:
    """Serve blocks up to 32 MiB from the heap and keep up to ``trim_threshold`` bytes of freed heap in the process.

    Process-wide and idempotent; larger blocks (the replay buffer) are still mapped and unmapped on their own.
    Returns ``False`` and changes nothing where the C library is not glibc."""
    return set_malloc_thresholds(MMAP_THRESHOLD_MAX, trim_threshold)


def set_malloc_thresholds(mmap_threshold: int, trim_threshold: int) -> bool:
    """Pin glibc's mmap and trim thresholds (which also stops their adaptation); ``False`` where there is no glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(M_TRIM_THRESHOLD, trim_threshold))


__all__ = ["keep_freed_memory", "set_malloc_thresholds"]
