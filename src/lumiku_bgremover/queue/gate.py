"""Back-pressure while a dependency (database, object store, NATS) is down.

An error that looks like an outage (`classify`) is confirmed by probing every
dependency; when one does not answer, the gate closes: the work queue stops
fetching and starting items, items in hand wait (heartbeated, so they spend no
delivery) and run again once every probe answers. The gate reopens by itself.
An outage candidate whose probes all pass was a blip (a reset connection, a
stream electing its leader): the work queue runs the item again once, on the
same delivery, and a second such error is an ordinary failure of the item.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger(__name__)

#: Seconds between probes while the gate is closed.
PROBE_INTERVAL_S = 2.0
#: Seconds one probe may take before its dependency counts as down.
PROBE_TIMEOUT_S = 5.0


class Gate(Protocol):
    """What the work queue asks before and after it works on an item."""

    async def down(self, error: BaseException) -> bool:
        """Whether `error` came from a dependency that is down now (the gate is then closed)."""

    def candidate(self, error: BaseException) -> bool:
        """Whether `error` looks like a dependency's, whatever the probes say."""

    async def wait_up(self) -> None:
        """Return once the gate is open."""


class AlwaysUp:
    """A gate that never closes: every error counts against the item."""

    async def down(self, error: BaseException) -> bool:  # noqa: ARG002
        return False

    def candidate(self, error: BaseException) -> bool:  # noqa: ARG002
        return False

    async def wait_up(self) -> None:
        return


@dataclass
class Probe:
    """One dependency's health check; at most one check runs at a time."""

    name: str
    check: Callable[[], Awaitable[object]]
    _running: asyncio.Task[object] | None = field(default=None, repr=False)

    async def answers(self, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
        """Whether the dependency answered within `timeout_s` (a slow check keeps running)."""
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(self.check())
        task = self._running
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
        if not done:
            return False
        return not task.cancelled() and task.exception() is None


class DependencyGate:
    """The `Gate` over a set of probes, for errors `classify` calls outage candidates."""

    def __init__(
        self,
        probes: Sequence[Probe],
        classify: Callable[[BaseException], bool],
        *,
        interval_s: float = PROBE_INTERVAL_S,
    ) -> None:
        self._probes, self._classify, self._interval_s = list(probes), classify, interval_s
        self._open = asyncio.Event()
        self._open.set()
        self._watch: asyncio.Task[None] | None = None

    @property
    def is_open(self) -> bool:
        """Whether work may be taken now."""
        return self._open.is_set()

    def candidate(self, error: BaseException) -> bool:
        """Whether `error` is an outage candidate (connection-type)."""
        return self._classify(error)

    async def down(self, error: BaseException) -> bool:
        """Close the gate when `error` is an outage candidate and a probe fails."""
        if not self._classify(error):
            return False
        if not self._open.is_set():
            return True
        missing = await self._unanswered()
        if not missing:
            return not self._open.is_set()  # closed meanwhile by another slot's probe
        if self._open.is_set():
            log.warning("dependency down (%s) after %r: pausing work", ", ".join(missing), error)
            self._open.clear()
            self._watch = asyncio.create_task(self._until_up())
        return True

    async def wait_up(self) -> None:
        """Return once every dependency answers again."""
        await self._open.wait()

    async def close(self) -> None:
        """Stop probing (at shutdown)."""
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch

    async def _unanswered(self) -> list[str]:
        answers = await asyncio.gather(*(probe.answers() for probe in self._probes))
        return [probe.name for probe, ok in zip(self._probes, answers, strict=True) if not ok]

    async def _until_up(self) -> None:
        while missing := await self._unanswered():
            log.info("still waiting for %s", ", ".join(missing))
            await asyncio.sleep(self._interval_s)
        log.warning("dependencies answer again: resuming work")
        self._open.set()
