"""glibc's mmap threshold is fixed for the worker, so freed image buffers leave the process."""

from __future__ import annotations

import ctypes.util
import platform
import subprocess
import sys

import pytest

from lumiku_bgremover import memory

GLIBC = platform.libc_ver()[0] == "glibc"

#: Allocates, frees and allocates again an 8 MiB buffer; prints whether the second one
#: was mmapped too (glibc's `mallinfo2().hblkhd`: bytes in mmapped blocks).
PROBE = """
import ctypes, sys
import numpy as np
from lumiku_bgremover import memory

class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                 "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
if sys.argv[1] == "fixed":
    memory.fix_mmap_threshold()
first = np.ones(1 << 20)
del first  # glibc's dynamic threshold now rises to 8 MiB unless it is fixed
base = libc.mallinfo2().hblkhd
second = np.ones(1 << 20)
print(libc.mallinfo2().hblkhd - base >= 8 << 20)
"""


def second_buffer_mmapped(mode: str) -> bool:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                          check=True)  # fmt: skip
    return done.stdout.strip() == "True"


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_large_buffers_stay_mmapped_after_one_is_freed() -> None:
    assert second_buffer_mmapped("fixed")
    assert not second_buffer_mmapped("default")  # what the fix is for


def test_without_glibc_nothing_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ctypes.util, "find_library", lambda _name: "/nonexistent/libc.so")
    assert memory.fix_mmap_threshold() is False
