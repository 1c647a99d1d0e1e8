"""One work item: fetch, decode, remove the background, compose, store, record, announce.

The work queue acks an item only after `process` returned, that is after the
result object, the item's state and its end event are durable. A redelivered
item whose state has already ended announces that end if it never went out
(`item_ends`) and makes sure its batch is finished.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import asyncpg
from opentelemetry.trace import SpanKind

from lumiku_bgremover import imaging
from lumiku_bgremover.contracts.codes import FailCode
from lumiku_bgremover.contracts.work import WorkItem
from lumiku_bgremover.db import batches as repo
from lumiku_bgremover.engines.base import EngineError
from lumiku_bgremover.engines.router import EngineRouter
from lumiku_bgremover.observability.logs import log_ids
from lumiku_bgremover.observability.recorder import DONE, FAILED, NO_ENGINE, PipelineMetrics
from lumiku_bgremover.observability.tracing import Tracing
from lumiku_bgremover.pipeline.completion import Finalizer
from lumiku_bgremover.pipeline.events import Publisher
from lumiku_bgremover.pipeline.item_ends import EndedImage, ItemEnds
from lumiku_bgremover.queue import Delivery
from lumiku_bgremover.services import Clock
from lumiku_bgremover.sources import FetchFailed, SourceError, SourceLoader
from lumiku_bgremover.storage import ObjectStore

log = logging.getLogger(__name__)

CONSUMER = SpanKind.CONSUMER


class ItemFailedError(Exception):
    """The item cannot succeed (or ran out of attempts): record it as failed."""

    def __init__(self, code: FailCode, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.code, self.message, self.retryable = code, message, retryable


@dataclass(frozen=True, slots=True)
class Produced:
    """A stored result and how it was made."""

    result: repo.ItemResult
    url: str


class ItemProcessor:
    """The work queue's `Processor`."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        store: ObjectStore,
        loader: SourceLoader,
        router: EngineRouter,
        *,
        events: Publisher,
        finalizer: Finalizer,
        clock: Clock,
        max_pixels: int,
        presign_ttl_s: int,
        metrics: PipelineMetrics,
        tracing: Tracing | None = None,
    ) -> None:
        self._pool, self._store, self._loader, self._router = pool, store, loader, router
        self._events, self._finalizer, self._clock = events, finalizer, clock
        self._metrics, self._tracing = metrics, tracing or Tracing()
        self._ends = ItemEnds(pool, store, events, clock=clock, presign_ttl_s=presign_ttl_s)
        self._max_pixels, self._ttl = max_pixels, presign_ttl_s

    async def process(self, delivery: Delivery) -> None:
        """Process one delivery (a span in the trace its message carries); raises to retry."""
        item = delivery.item
        ids = _ids(item)
        with (
            self._tracing.span("bgremove.item", parent=delivery.headers, kind=CONSUMER, ids=ids),
            log_ids(**ids),
        ):
            await self._process(delivery)

    async def _process(self, delivery: Delivery) -> None:
        item = delivery.item
        async with self._pool.acquire() as conn:
            claimed = await repo.claim_item(conn, item.item_id)
        if claimed is None:
            await self._reannounce(item)
            return
        try:
            produced = await self._produce(item)
        except ItemFailedError as failure:
            if failure.retryable and not delivery.last:
                raise
            await self._fail(item, failure.code, failure.message)
            return
        await self._done(item, produced)

    async def give_up(self, item: WorkItem, *, code: FailCode, message: str) -> None:
        """Record the item as failed after its last delivery (idempotent)."""
        ids = _ids(item)
        with self._tracing.span("bgremove.item.give_up", ids=ids), log_ids(**ids):
            await self._fail(item, code, message)

    async def _produce(self, item: WorkItem) -> Produced:
        started = time.monotonic()
        data = await self._load(item)
        decoded = await asyncio.to_thread(self._decode, data)
        try:
            call = await self._router.matte(item.tier, decoded.image)
        except EngineError as error:
            raise ItemFailedError(error.code, str(error), retryable=error.retryable) from error
        self._metrics.engine_call(call.engine, call.model, call.latency_ms / 1000)
        encoded = await asyncio.to_thread(imaging.compose, decoded, call.matte, item.options)
        key = f"results/{item.user_id}/{item.batch_id}/{item.item_id}.{encoded.extension}"
        info = await self._store.put_bytes(key, encoded.data, encoded.content_type)
        url = await self._store.presigned_get_url(key, ttl_s=self._ttl)
        result = repo.ItemResult(
            bucket=info.bucket, key=key, size=info.size, width=encoded.width,
            height=encoded.height, content_type=encoded.content_type, engine=call.engine,
            model=call.model, processing_ms=int((time.monotonic() - started) * 1000),
            cost_idr=call.cost_idr, provider=call.provider, engine_ms=call.latency_ms,
            engine_attempts=call.attempts, engine_fallback=call.fallback,
        )  # fmt: skip
        return Produced(result, url)

    async def _load(self, item: WorkItem) -> bytes:
        try:
            return await self._loader.load(item.ref, item.user_id)
        except FetchFailed as error:
            raise ItemFailedError(error.code, str(error), retryable=True) from error
        except SourceError as error:
            raise ItemFailedError(error.code, str(error)) from error

    def _decode(self, data: bytes) -> imaging.Decoded:
        try:
            return imaging.decode(data, max_pixels=self._max_pixels)
        except imaging.ImageError as error:
            raise ItemFailedError(error.code, error.message) from error

    async def _done(self, item: WorkItem, produced: Produced) -> None:
        async with self._pool.acquire() as conn:
            batch = await repo.finish_item(conn, item.item_id, produced.result)
        if batch is None:  # ended meanwhile (cancelled, or given up): nothing to announce
            await self._reannounce(item)
            return
        self._metrics.item_finished(item.tier.value, produced.result.engine, DONE)
        log.info("item %s done", item.item_id)
        await self._ends.done(batch, EndedImage.of_work(item), produced.result, produced.url)
        await self._after_end(batch)

    async def _fail(self, item: WorkItem, code: FailCode, message: str) -> None:
        async with self._pool.acquire() as conn:
            batch = await repo.fail_item(conn, item.item_id, code, message)
        if batch is None:
            await self._reannounce(item)
            return
        self._metrics.item_finished(item.tier.value, NO_ENGINE, FAILED, code.value)
        log.info("item %s failed: %s %s", item.item_id, code, message)
        await self._ends.failed(batch, EndedImage.of_work(item), code, message)
        await self._after_end(batch)

    async def _after_end(self, batch: repo.Batch) -> None:
        await self._finalizer.progress(batch)
        if batch.all_ended:
            await self._finalizer.finalize(batch.id)

    async def _reannounce(self, item: WorkItem) -> None:
        """The item ended before: announce its end if that never went out, finish the batch."""
        async with self._pool.acquire() as conn:
            batch = await repo.get_batch(conn, item.batch_id)
            rows = [r for r in await repo.list_items(conn, item.batch_id) if r.id == item.item_id]
        if batch is None or not rows:
            return
        await self._ends.again(batch, rows[0], EndedImage.of_work(item))
        if batch.all_ended:
            await self._finalizer.finalize(batch.id)


def _ids(item: WorkItem) -> dict[str, str | None]:
    return {"batch_id": item.batch_id, "item_id": item.item_id, "user_id": item.user_id}
