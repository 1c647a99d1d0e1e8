"""The end of a batch, exactly once: archive, refunds, the completed state and event.

Whoever ends a batch's last item calls `Finalizer.finalize`. A conditional state
transition (`begin_finalizing`) picks one caller; a caller that finds the batch
left in `finalizing` by a crash redoes the work, which is idempotent step by
step (the archive is overwritten, the refund has an idempotency key, the event
a stable id, and the final UPDATE is conditional).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from lumiku_bgremover import billing, pricing
from lumiku_bgremover.contracts import BatchCompleted, BatchProgress, ObjectRef, subjects
from lumiku_bgremover.contracts.common import BatchStatus, Correlation, RequestMode, Tier
from lumiku_bgremover.pipeline import repository as repo
from lumiku_bgremover.pipeline.events import EventPublisher
from lumiku_bgremover.services import Clock
from lumiku_bgremover.storage import ObjectStore
from lumiku_bgremover.storage.archive import ArchiveEntry, build_archive
from lumiku_bgremover.storage.zipnames import zip_names

log = logging.getLogger(__name__)

#: Least time between two progress events of one batch from one process.
PROGRESS_INTERVAL_S = 1.0
#: Batches whose last progress time a process remembers (others may finish them).
PROGRESS_MEMORY = 10_000


def final_status(batch: repo.Batch) -> BatchStatus:
    """completed if anything succeeded, else cancelled if anything was cancelled, else failed."""
    if batch.succeeded:
        return BatchStatus.COMPLETED
    return BatchStatus.CANCELLED if batch.cancelled else BatchStatus.FAILED


def refund_owed(batch: repo.Batch) -> int:
    """Credits still owed back for the batch's failed and cancelled items."""
    charge = pricing.BatchCharge(
        count=batch.total_items,
        credits_per_image=batch.credits_per_image,
        discount_pct=batch.discount_pct,
        total=batch.credits_charged,
    )
    return pricing.refund_due(charge, batch.failed + batch.cancelled, batch.credits_refunded)


def correlation_of(batch: repo.Batch) -> Correlation | None:
    """The request's correlation, echoed on the batch's events."""
    return None if batch.correlation is None else Correlation(**batch.correlation)


async def refund_ended(conn: billing.Conn, batch: repo.Batch) -> int:
    """Refund what the ended items are owed (idempotent per count of ended items)."""
    owed = refund_owed(batch)
    if owed <= 0:
        return 0
    ended = batch.failed + batch.cancelled
    async with conn.transaction():
        entry = await billing.refund(
            conn,
            batch.user_id,
            owed,
            idempotency_key=f"refund:{batch.id}:{ended}",
            reference=billing.Reference("batch", batch.id),
        )
        if entry is None or entry.replayed:
            return 0
        await repo.record_refund(conn, batch.id, entry.amount)
        return entry.amount


@dataclass(frozen=True, slots=True)
class Archive:
    """Where a batch's ZIP went."""

    ref: ObjectRef
    url: str
    expires_at: datetime


class Finalizer:
    """Finishes batches and publishes their progress."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        store: ObjectStore,
        events: EventPublisher,
        *,
        clock: Clock,
        presign_ttl_s: int,
        max_entry_bytes: int,
    ) -> None:
        self._pool, self._store, self._events, self._clock = pool, store, events, clock
        self._ttl, self._max_entry = presign_ttl_s, max_entry_bytes
        self._last_progress: dict[str, datetime] = {}

    async def progress(self, batch: repo.Batch) -> None:
        """A `batch.progress` event, at most one a second per batch from this process."""
        now = self._clock()
        last = self._last_progress.get(batch.id)
        if batch.all_ended:
            self._last_progress.pop(batch.id, None)
        elif last is not None and (now - last).total_seconds() < PROGRESS_INTERVAL_S:
            return
        else:
            if len(self._last_progress) >= PROGRESS_MEMORY:
                self._last_progress.clear()  # at worst one extra event per batch
            self._last_progress[batch.id] = now
        message = BatchProgress(
            batch_id=batch.id, user_id=batch.user_id, total=batch.total_items,
            succeeded=batch.succeeded, failed=batch.failed, cancelled=batch.cancelled,
            correlation=correlation_of(batch), updated_at=now,
        )  # fmt: skip
        await self._events.publish(
            subjects.BATCH_PROGRESS, message, key=f"{batch.id}:{batch.ended}"
        )

    async def finalize(self, batch_id: str) -> bool:
        """Finish the batch if all its items ended; True when this call finished it."""
        async with self._pool.acquire() as conn:
            batch = await repo.begin_finalizing(conn, batch_id)
            if batch is None:
                batch = await repo.get_batch(conn, batch_id)
                if batch is None or batch.status != "finalizing":
                    return False  # not all ended yet, or finished by someone else
        archive = await self._archive(batch)
        async with self._pool.acquire() as conn:
            await refund_ended(conn, batch)
            if batch.mode == "single" and batch.quota_key and batch.failed + batch.cancelled:
                await billing.release_quota(conn, idempotency_key=batch.quota_key)
            batch = await repo.get_batch(conn, batch_id) or batch
            status = final_status(batch)
            await self._publish_completed(batch, status, archive)
            done = await repo.complete(
                conn, batch_id, status=status.value,
                archive=(archive.ref.bucket, archive.ref.key) if archive else None,
            )  # fmt: skip
        log.info("batch %s %s: %d ok, %d failed, %d cancelled", batch_id, status,
                 batch.succeeded, batch.failed, batch.cancelled)  # fmt: skip
        return done is not None

    async def _archive(self, batch: repo.Batch) -> Archive | None:
        if batch.mode != RequestMode.BATCH.value or batch.succeeded == 0:
            return None
        async with self._pool.acquire() as conn:
            items = await repo.list_items(conn, batch.id, status="done")
        extension = (items[0].result_key or "").rsplit(".", 1)[-1]  # one format per batch
        names = zip_names([i.filename for i in items], extension)
        entries = [
            ArchiveEntry(name=name, key=i.result_key or "", bucket=i.result_bucket)
            for name, i in zip(names, items, strict=True)
        ]
        key = f"archives/{batch.user_id}/{batch.id}.zip"
        info = await build_archive(self._store, key, entries, max_entry_bytes=self._max_entry)
        url = await self._store.presigned_get_url(key, ttl_s=self._ttl)
        expires = self._clock() + timedelta(seconds=self._ttl)
        return Archive(ObjectRef(bucket=info.bucket, key=key), url, expires)

    async def _publish_completed(
        self, batch: repo.Batch, status: BatchStatus, archive: Archive | None
    ) -> None:
        message = BatchCompleted(
            batch_id=batch.id, request_id=batch.request_id, user_id=batch.user_id,
            tier=Tier(batch.tier), mode=RequestMode(batch.mode), status=status,
            total=batch.total_items, succeeded=batch.succeeded, failed=batch.failed,
            cancelled=batch.cancelled, archive=archive.ref if archive else None,
            archive_url=archive.url if archive else None,
            archive_url_expires_at=archive.expires_at if archive else None,
            credits_charged=batch.credits_charged, credits_refunded=batch.credits_refunded,
            correlation=correlation_of(batch), completed_at=self._clock(),
        )  # fmt: skip
        await self._events.publish(subjects.BATCH_COMPLETED, message, key=batch.id)
