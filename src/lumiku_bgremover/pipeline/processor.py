"""One work item: fetch, decode, remove the background, compose, store, record, announce.

The work queue acks an item only after `process` returned, that is after the
result object and the item's state are durable. A redelivered item whose state
has already ended re-announces that end (same event id: de-duplicated) and
makes sure its batch is finished.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import cast, get_args

import asyncpg
from opentelemetry.trace import SpanKind

from lumiku_bgremover import imaging
from lumiku_bgremover.contracts import ItemDone, ObjectRef, UpscalerRequested, subjects
from lumiku_bgremover.contracts.codes import FailCode
from lumiku_bgremover.contracts.outbound import ContentType
from lumiku_bgremover.contracts.work import WorkItem
from lumiku_bgremover.db import batches as repo
from lumiku_bgremover.engines.base import EngineError
from lumiku_bgremover.engines.router import EngineRouter
from lumiku_bgremover.observability.logs import log_ids
from lumiku_bgremover.observability.recorder import DONE, FAILED, NO_ENGINE, PipelineMetrics
from lumiku_bgremover.observability.tracing import Tracing
from lumiku_bgremover.pipeline.announce import Announcer
from lumiku_bgremover.pipeline.completion import Finalizer
from lumiku_bgremover.pipeline.events import Publisher
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
        self._announcer = Announcer(events, clock=clock)
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
        await self._announce_done(item, produced.result, produced.url)
        await self._after_end(batch)

    async def _fail(self, item: WorkItem, code: FailCode, message: str) -> None:
        async with self._pool.acquire() as conn:
            batch = await repo.fail_item(conn, item.item_id, code, message)
        if batch is None:
            await self._reannounce(item)
            return
        self._metrics.item_finished(item.tier.value, NO_ENGINE, FAILED, code.value)
        log.info("item %s failed: %s %s", item.item_id, code, message)
        await self._announce_failed(item, batch, code, message)
        await self._after_end(batch)

    async def _after_end(self, batch: repo.Batch) -> None:
        await self._finalizer.progress(batch)
        if batch.all_ended:
            await self._finalizer.finalize(batch.id)

    async def _reannounce(self, item: WorkItem) -> None:
        """The item ended before: publish its end again (de-duplicated) and finish the batch."""
        async with self._pool.acquire() as conn:
            batch = await repo.get_batch(conn, item.batch_id)
            rows = [r for r in await repo.list_items(conn, item.batch_id) if r.id == item.item_id]
        if batch is None or not rows:
            return
        row = rows[0]
        if row.status is repo.ItemState.DONE and row.result_key:
            url = await self._store.presigned_get_url(row.result_key, ttl_s=self._ttl)
            await self._announce_done(item, _stored_result(row), url)
        elif row.status is repo.ItemState.FAILED:
            await self._announcer.failed(batch, row, item.source_id)
        if batch.all_ended:
            await self._finalizer.finalize(batch.id)

    async def _announce_done(self, item: WorkItem, result: repo.ItemResult, url: str) -> None:
        now = self._clock()
        ref = ObjectRef(bucket=result.bucket, key=result.key)
        message = ItemDone(
            batch_id=item.batch_id, item_id=item.item_id, user_id=item.user_id,
            index=item.index, filename=item.filename, result=ref, url=url,
            url_expires_at=now + timedelta(seconds=self._ttl),
            content_type=_content_type(result.content_type), size_bytes=result.size,
            width=result.width, height=result.height, engine=result.engine, model=result.model,
            processing_ms=result.processing_ms, correlation=item.correlation,
            source_id=item.source_id, completed_at=now,
        )  # fmt: skip
        await self._events.publish(subjects.ITEM_DONE, message, key=item.item_id)
        if item.then_upscale is not None:
            handover = UpscalerRequested(
                request_id=f"{item.item_id}.upscale", user_id=item.user_id,
                batch_id=item.batch_id, item_id=item.item_id, image=ref, url=url,
                url_expires_at=message.url_expires_at, filename=item.filename,
                content_type=_content_type(result.content_type), scale=item.then_upscale.scale,
                tier=item.tier, correlation=item.correlation, requested_at=now,
            )  # fmt: skip
            await self._events.publish(subjects.UPSCALER_REQUESTED, handover, key=item.item_id)

    async def _announce_failed(
        self, item: WorkItem, batch: repo.Batch, code: FailCode, message: str
    ) -> None:
        await self._announcer.item_failed(
            batch, item_id=item.item_id, index=item.index, filename=item.filename,
            code=code, message=message, source_id=item.source_id,
        )  # fmt: skip


def _ids(item: WorkItem) -> dict[str, str | None]:
    return {"batch_id": item.batch_id, "item_id": item.item_id, "user_id": item.user_id}


def _stored_result(row: repo.Item) -> repo.ItemResult:
    return repo.ItemResult(
        bucket=row.result_bucket or "", key=row.result_key or "", size=row.result_size or 1,
        width=row.width or 1, height=row.height or 1,
        content_type=row.content_type or "application/octet-stream",
        engine=row.engine or "unknown", model=row.model or "unknown",
        processing_ms=row.processing_ms or 0, cost_idr=row.cost_idr,
    )  # fmt: skip


def _content_type(value: str) -> ContentType:
    if value not in get_args(ContentType):
        raise ValueError(f"not a result content type: {value!r}")
    return cast("ContentType", value)
