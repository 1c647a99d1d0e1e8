"""The worker hands freed image buffers back to the system (glibc `malloc_trim`)."""

from __future__ import annotations

import ctypes.util
import platform
import subprocess
import sys
import threading

import pytest

from lumiku_bgremover import memory

GLIBC = platform.libc_ver()[0] == "glibc"

#: Frees every other one of 400 MiB of 64 KiB blocks (heap, not mmap: holes the heap
#: cannot shrink past), then prints the resident MiB before and after one `trim`.
PROBE = """
import gc
from lumiku_bgremover import memory

def resident_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024

blocks = [bytearray(64 * 1024) for _ in range(6400)]  # below the mmap threshold
del blocks[::2]
gc.collect()
before = resident_mib()
memory.trim(memory.glibc())
print(before, resident_mib())
"""


@pytest.mark.skipif(not GLIBC, reason="malloc_trim is glibc's")
def test_trimming_returns_freed_heap_memory() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          check=True)  # fmt: skip
    before, after = map(int, done.stdout.split())
    assert before - after >= 150  # of the 200 MiB freed in holes


@pytest.mark.skipif(not GLIBC, reason="malloc_trim is glibc's")
def test_the_trimming_thread_runs_until_stopped() -> None:
    stop = memory.start_trimming(0.01)
    assert stop is not None
    assert any(t.name == "lumiku-malloc-trim" for t in threading.enumerate())
    stop.set()


def test_without_glibc_nothing_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ctypes.util, "find_library", lambda _name: "/nonexistent/libc.so")
    assert memory.glibc() is None
    assert memory.start_trimming() is None
