"""Process memory: hand freed image buffers back to the system.

glibc serves a large allocation with mmap (returned to the system on free) only while
it is above the *dynamic* mmap threshold, which rises to the size of every large
block freed (up to 32 MiB). After a few images every numpy and Pillow buffer of a
worker comes from the heap arenas of its worker threads, and the freed space stays
resident: a worker on 4 MiB images grew to about 900 MiB and stayed there (bench B4).

Two remedies were measured (bench B2, B4): fixing the threshold low keeps RSS under
400 MiB but costs half the throughput (every buffer is a fresh mmap, page-faulted and
zeroed); `malloc_trim` once a second from a daemon thread releases the arenas' free
pages while buffers are still reused between images. `lumiku-bgremover run` does the
latter.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from typing import Any, Final

__all__ = ["TRIM_INTERVAL_S", "glibc", "start_trimming", "trim"]

log = logging.getLogger(__name__)

#: Seconds between two `malloc_trim` calls of the trimming thread.
TRIM_INTERVAL_S: Final = 1.0


def glibc() -> Any | None:
    """The C library when it is glibc (it has `malloc_trim`), else None."""
    try:
        library = ctypes.CDLL(ctypes.util.find_library("c"))
        trim_function = library.malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    trim_function.argtypes = [ctypes.c_size_t]
    trim_function.restype = ctypes.c_int
    return library


def trim(library: Any) -> bool:
    """Return the free pages of every malloc arena to the system; whether any were."""
    return bool(library.malloc_trim(0))


def start_trimming(interval_s: float = TRIM_INTERVAL_S) -> threading.Event | None:
    """Trim every `interval_s` seconds in a daemon thread until the returned event is
    set; None (nothing started) when the C library is not glibc."""
    library = glibc()
    if library is None:
        return None
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval_s):
            trim(library)

    threading.Thread(target=loop, name="lumiku-malloc-trim", daemon=True).start()
    log.debug("trimming malloc arenas every %.1f s", interval_s)
    return stop
