"""runtime/allocator.py: a fixed glibc mmap threshold keeps batch-sized blocks off the heap."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

glibc = pytest.mark.skipif(not sys.platform.startswith("linux") or os.environ.get("MALLOC_MMAP_THRESHOLD_"),
                           reason="glibc's mallopt and mallinfo2")

# Frees a 24 MiB block (glibc's default then raises its threshold to 24 MiB), then takes a 6 MiB
# one: mallinfo2's count of mapped blocks says whether it got a mapping of its own or heap memory.
_PROBE = """
import ctypes, sys
from stream_monitor.runtime.allocator import tune_allocator

class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
outcome = tune_allocator() if sys.argv[1] == "tuned" else "glibc defaults"
big = bytearray(24 << 20)
del big
before = libc.mallinfo2().hblks
block = bytearray(6 << 20)
print(outcome, libc.mallinfo2().hblks - before)
"""


def _probe(mode: str, **env: str) -> str:
    done = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True,
                          env={**os.environ, **env})
    return done.stdout.strip()


@glibc
def test_a_batch_sized_block_is_mapped_once_the_threshold_is_fixed() -> None:
    assert _probe("tuned") == "set 1"


@glibc
def test_glibc_defaults_put_the_same_block_on_the_heap() -> None:
    """The probe sees the difference: without the setting, the block comes from the heap."""
    assert _probe("defaults") == "glibc defaults 0"


@glibc
def test_an_operators_own_setting_is_left_alone() -> None:
    assert _probe("tuned", MALLOC_MMAP_THRESHOLD_="8388608") == "environment 0"

