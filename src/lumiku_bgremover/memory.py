"""Process memory: keep glibc from holding freed image buffers.

glibc serves a large allocation with mmap (returned to the system on free) only while
it is above the *dynamic* mmap threshold, which rises to the size of every large
block freed (up to 32 MiB). After a few images every numpy and Pillow buffer of a
worker comes from the heap arenas of its worker threads, and the freed space stays
resident: a worker on 4 MiB images grew to about 900 MiB (bench B4). A fixed
threshold keeps large buffers mmapped, so resident memory follows what is live
(under 400 MiB there). `MALLOC_MMAP_THRESHOLD_` in the environment does the same
before the process starts; this sets it at run time, for `lumiku-bgremover run`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from typing import Final

__all__ = ["MMAP_THRESHOLD_BYTES", "fix_mmap_threshold"]

log = logging.getLogger(__name__)

#: glibc's initial (static) threshold: blocks from 128 KiB up are mmapped.
MMAP_THRESHOLD_BYTES: Final = 128 * 1024
_M_MMAP_THRESHOLD: Final = -3  #: mallopt's parameter number (malloc.h)


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold at `threshold` bytes (no dynamic raise); False when
    the C library is not glibc (musl, macOS) and nothing changed."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(_M_MMAP_THRESHOLD, threshold))
    log.debug("glibc mmap threshold fixed at %d bytes: %s", threshold, done)
    return done
