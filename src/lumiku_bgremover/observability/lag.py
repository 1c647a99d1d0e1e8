"""Measures the work-queue lag from the provisioned consumers, every few seconds."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from nats.js import JetStreamContext

from lumiku_bgremover.contracts.work import Lane
from lumiku_bgremover.observability.metrics import Metrics
from lumiku_bgremover.operations.queue import lag_by_lane, work_consumers
from lumiku_bgremover.settings import Limits, NatsSettings

__all__ = ["LagMonitor"]

log = logging.getLogger(__name__)


class LagMonitor:
    """Sets the lag gauges of `metrics` from JetStream consumer info."""

    def __init__(
        self, js: JetStreamContext, nats: NatsSettings, limits: Limits, metrics: Metrics
    ) -> None:
        self._js, self._nats, self._limits, self._metrics = js, nats, limits, metrics

    async def refresh(self) -> dict[Lane, int]:
        """Measure once, set the gauges, return the lag of each lane."""
        lags = lag_by_lane(await work_consumers(self._js, self._nats, self._limits))
        self._metrics.record_lag(lags)
        return lags

    async def run(self, interval_s: float) -> None:
        """Refresh every `interval_s` until cancelled; a failed measurement is logged."""
        while True:
            try:
                await self.refresh()
            except Exception:
                log.warning("work-queue lag not measured", exc_info=True)
            await asyncio.sleep(interval_s)

    @contextlib.asynccontextmanager
    async def running(self, interval_s: float) -> AsyncIterator[None]:
        """Run in the background while the context is open."""
        task = asyncio.create_task(self.run(interval_s))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
