"""The end of one image, announced exactly once: `item.done` or `item.failed`, then a mark.

An image's row ends first (done, failed, or cancelled: `item.failed` with the code
`cancelled`), its event goes out next, and the row then records the announcement
(`announced_at`, an outbox mark). An event that a crash or a NATS outage swallowed
goes out again from a redelivery of the item or, at the latest, from whoever
finishes the batch, before `batch.completed`: a client that sees `batch.completed`
has been sent every image's end. A fact already announced is not published again,
so a late redelivery cannot repeat one outside JetStream's de-duplication window.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast, get_args

import asyncpg
import msgspec

from lumiku_bgremover.contracts import ItemDone, ObjectRef, UpscalerRequested, subjects
from lumiku_bgremover.contracts.codes import FailCode
from lumiku_bgremover.contracts.inbound import UpscaleStep
from lumiku_bgremover.contracts.outbound import ContentType
from lumiku_bgremover.contracts.work import WorkItem
from lumiku_bgremover.db import batches as repo
from lumiku_bgremover.pipeline.announce import Announcer
from lumiku_bgremover.pipeline.events import Publisher
from lumiku_bgremover.services import Clock
from lumiku_bgremover.storage import ObjectStore


@dataclass(frozen=True, slots=True)
class EndedImage:
    """What an image's end event says about the image itself."""

    item_id: str
    index: int
    filename: str
    source_id: str | None
    then_upscale: UpscaleStep | None

    @classmethod
    def of_work(cls, item: WorkItem) -> EndedImage:
        """The image as its work item carries it."""
        return cls(item.item_id, item.index, item.filename, item.source_id, item.then_upscale)

    @classmethod
    def of_row(cls, batch: repo.Batch, row: repo.Item) -> EndedImage:
        """The image as its stored row (and its batch's upscale step) say."""
        scale = batch.then_upscale_scale
        step = None if scale is None else msgspec.convert({"scale": scale}, UpscaleStep)
        return cls(row.id, row.idx, row.filename, row.source_id, step)


CANCELLED_MESSAGE = "the batch was cancelled before this image ran"


class ItemEnds:
    """Publishes images' end events and records that they went out."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        store: ObjectStore,
        events: Publisher,
        *,
        clock: Clock,
        presign_ttl_s: int,
    ) -> None:
        self._pool, self._store, self._events, self._clock = pool, store, events, clock
        self._announcer = Announcer(events, clock=clock)
        self._ttl = presign_ttl_s

    async def done(
        self, batch: repo.Batch, image: EndedImage, result: repo.ItemResult, url: str
    ) -> None:
        """`item.done` (and the Upscaler hand-over when asked for), then the mark."""
        now = self._clock()
        ref = ObjectRef(bucket=result.bucket, key=result.key)
        message = ItemDone(
            batch_id=batch.id, item_id=image.item_id, user_id=batch.user_id,
            index=image.index, filename=image.filename, result=ref, url=url,
            url_expires_at=now + timedelta(seconds=self._ttl),
            content_type=_content_type(result.content_type), size_bytes=result.size,
            width=result.width, height=result.height, engine=result.engine, model=result.model,
            processing_ms=result.processing_ms, correlation=batch.correlation,
            source_id=image.source_id, completed_at=now,
        )  # fmt: skip
        await self._events.publish(subjects.ITEM_DONE, message, key=image.item_id)
        if image.then_upscale is not None:
            await self._hand_over(batch, image, message, image.then_upscale)
        await self._mark(image.item_id)

    async def _hand_over(
        self, batch: repo.Batch, image: EndedImage, done: ItemDone, step: UpscaleStep
    ) -> None:
        handover = UpscalerRequested(
            request_id=f"{image.item_id}.upscale", user_id=batch.user_id, batch_id=batch.id,
            item_id=image.item_id, image=done.result, url=done.url,
            url_expires_at=done.url_expires_at, filename=image.filename,
            content_type=done.content_type, scale=step.scale, tier=batch.tier,
            correlation=batch.correlation, requested_at=done.completed_at,
        )  # fmt: skip
        await self._events.publish(subjects.UPSCALER_REQUESTED, handover, key=image.item_id)

    async def failed(
        self,
        batch: repo.Batch,
        image: EndedImage,
        code: FailCode,
        message: str,
        *,
        failed_at: datetime | None = None,
    ) -> None:
        """`item.failed`, then the mark."""
        await self._announcer.item_failed(
            batch, item_id=image.item_id, index=image.index, filename=image.filename,
            code=code, message=message, failed_at=failed_at, source_id=image.source_id,
        )  # fmt: skip
        await self._mark(image.item_id)

    async def again(self, batch: repo.Batch, row: repo.Item, image: EndedImage) -> None:
        """Announce a stored end that has not gone out yet; nothing when it has."""
        if row.announced_at is not None:
            return
        if row.status is repo.ItemState.DONE and row.result_key:
            url = await self._store.presigned_get_url(row.result_key, ttl_s=self._ttl)
            await self.done(batch, image, stored_result(row), url)
        elif row.status is repo.ItemState.FAILED:
            await self.failed(
                batch, image, row.error_code or FailCode.INTERNAL_ERROR,
                row.error_message or "", failed_at=row.finished_at,
            )  # fmt: skip
        elif row.status is repo.ItemState.CANCELLED:
            await self.failed(
                batch, image, FailCode.CANCELLED, CANCELLED_MESSAGE, failed_at=row.finished_at
            )

    async def stragglers(self, batch: repo.Batch) -> int:
        """Announce every ended image of the batch whose event has not gone out."""
        async with self._pool.acquire() as conn:
            rows = await repo.unannounced_items(conn, batch.id)
        for row in rows:
            await self.again(batch, row, EndedImage.of_row(batch, row))
        return len(rows)

    async def _mark(self, item_id: str) -> None:
        async with self._pool.acquire() as conn:
            await repo.mark_items_announced(conn, [item_id])


def stored_result(row: repo.Item) -> repo.ItemResult:
    """The result a done row records."""
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
