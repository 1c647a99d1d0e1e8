"""Stopping cleanly on Ctrl-C, SIGTERM and SIGHUP (a closed terminal).

The first signal cancels the command's task, so every `finally` and context manager
on the way out runs (servers are stopped, temporary files removed); later signals
are ignored while that clean-up runs, so an impatient second Ctrl-C cannot leave a
server behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final

__all__ = ["STOP_SIGNALS", "Interrupted", "SignalWatch", "stop_on_signals"]

#: The signals that stop a command cleanly.
STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(Exception):  # noqa: N818 - it reads as what happened
    """The command was stopped by a signal (after its clean-up ran)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        """The shell's convention: 128 + the signal number."""
        return 128 + self.signum


@dataclass(slots=True)
class SignalWatch:
    """What `stop_on_signals` saw, and an event set on the first signal."""

    received: int | None = None
    stopping: asyncio.Event | None = None

    def wait(self) -> asyncio.Event:
        """An event set by the first stop signal (for commands that just wait)."""
        if self.stopping is None:
            self.stopping = asyncio.Event()
        return self.stopping


@contextlib.asynccontextmanager
async def stop_on_signals(*, cancel: bool = True) -> AsyncIterator[SignalWatch]:
    """Catch `STOP_SIGNALS` while inside; the first one cancels the current task
    (when `cancel`) and sets `watch.wait()`. A cancellation caused by a signal leaves
    the block as `Interrupted`; others pass through unchanged."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    watch = SignalWatch()
    stopping = watch.wait()

    def on_signal(signum: int) -> None:
        if watch.received is not None:
            return
        watch.received = signum
        stopping.set()
        if cancel and task is not None:
            task.cancel()

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        yield watch
    except asyncio.CancelledError:
        if watch.received is None or task is None:
            raise
        task.uncancel()
        raise Interrupted(watch.received) from None
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
