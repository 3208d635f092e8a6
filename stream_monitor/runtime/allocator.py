"""A fixed glibc mmap threshold for the long-running commands (``run``, ``replay``).

glibc serves an allocation of at least ``M_MMAP_THRESHOLD`` bytes (128 KiB at
start) with a memory mapping of its own, given back to the system when it is
freed. But the threshold is dynamic: each time such a mapped block is freed,
glibc raises the threshold to its size (up to 32 MiB). A monitor frees large
blocks every batch (the batch's messages joined for one decode, the events
of a wide model, their hash tables), so after the first batches nearly every
allocation comes from the heap, and the heap keeps what the batches freed as
holes between the signals' long-lived state: memory the process holds and
no longer uses. At 10k numeric signals that was about a fifth of the RSS
(bench/memory.py prints the figure with glibc's default beside this one).

Setting the threshold once fixes it (glibc then stops moving it). Only where
glibc is the C library, and not when ``MALLOC_MMAP_THRESHOLD_`` is set in the
environment: that is the operator's own setting, which glibc has already applied.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["MMAP_THRESHOLD_BYTES", "tune_allocator"]

#: blocks of this size or more get a mapping of their own (glibc's M_MMAP_THRESHOLD)
MMAP_THRESHOLD_BYTES = 64 * 1024
#: mallopt's parameter number for the threshold (malloc.h)
_M_MMAP_THRESHOLD = -3


def tune_allocator(threshold: int = MMAP_THRESHOLD_BYTES) -> str:
    """Fix glibc's mmap threshold at ``threshold`` bytes; say what was done (for the start-up log).

    Returns ``"set"``, ``"environment"`` (``MALLOC_MMAP_THRESHOLD_`` is set:
    left alone) or ``"unavailable"`` (not glibc, or mallopt refused).
    """
    if os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        return "environment"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        gnu_get_libc_version = libc.gnu_get_libc_version  # only glibc has it
    except (OSError, AttributeError):
        return "unavailable"
    del gnu_get_libc_version
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return "set" if mallopt(_M_MMAP_THRESHOLD, threshold) == 1 else "unavailable"
