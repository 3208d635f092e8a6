"""Fixed glibc mmap and trim thresholds for the long-running service (``run``).

glibc serves an allocation of at least ``M_MMAP_THRESHOLD`` bytes (128 KiB at
start) with a memory mapping of its own, given back to the system when it is
freed, and gives the top of its heap back once more than ``M_TRIM_THRESHOLD``
of it is free. Both thresholds are dynamic: each time a mapped block is
freed, glibc raises the mmap threshold to its size (up to 32 MiB) and the
trim threshold to twice that. A monitor of a wide model frees large blocks
every batch (the messages joined for one decode, the events, their hash
tables: tens of MiB at 10k features), so after the first batches every
allocation comes from the heap, which keeps what the batches freed as holes
between the signals' long-lived state and up to 64 MiB free at its top:
memory the process holds and no longer uses.

Fixing the thresholds stops them moving. At 4 MiB and 8 MiB they stay where
the dynamic rule leaves them for a usual model (whose per-batch blocks are
well below 4 MiB: they still come from the heap, with no page faults per
batch), and a wide model's batch-sized blocks get mappings of their own.
bench/memory.py prints the RSS at 10k signals with this setting beside
glibc's defaults. ``replay``, a batch job, keeps glibc's defaults: with the
setting it measured 5-15% more CPU per event (bench/throughput.py's replay,
interleaved runs), and its memory is not held for months.

Only where glibc is the C library, and not when ``MALLOC_MMAP_THRESHOLD_`` or
``MALLOC_TRIM_THRESHOLD_`` is set in the environment: that is the operator's
own setting, which glibc has already applied.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["MMAP_THRESHOLD_BYTES", "TRIM_THRESHOLD_BYTES", "tune_allocator"]

#: blocks of this size or more get a mapping of their own (glibc's M_MMAP_THRESHOLD)
MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024
#: free memory at the top of the heap beyond this goes back to the system (M_TRIM_THRESHOLD)
TRIM_THRESHOLD_BYTES = 2 * MMAP_THRESHOLD_BYTES
#: mallopt's parameter numbers (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def tune_allocator(mmap_threshold: int = MMAP_THRESHOLD_BYTES, trim_threshold: int = TRIM_THRESHOLD_BYTES) -> str:
    """Fix glibc's mmap and trim thresholds; say what was done (for the start-up log).

    Returns ``"set"``, ``"environment"`` (``MALLOC_MMAP_THRESHOLD_`` or
    ``MALLOC_TRIM_THRESHOLD_`` is set: left alone) or ``"unavailable"`` (not
    glibc, or mallopt refused).
    """
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") or os.environ.get("MALLOC_TRIM_THRESHOLD_"):
        return "environment"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # only glibc has it  # noqa: B018
    except (OSError, AttributeError):
        return "unavailable"
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    done = mallopt(_M_MMAP_THRESHOLD, mmap_threshold) == 1 and mallopt(_M_TRIM_THRESHOLD, trim_threshold) == 1
    return "set" if done else "unavailable"
