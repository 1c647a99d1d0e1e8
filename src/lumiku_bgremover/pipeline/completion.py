"""The end of a batch, exactly once: archive, refunds, the final row, then the event.

Whoever ends a batch's last item calls `Finalizer.finalize`. A conditional state
transition (`begin_finalizing`) picks one caller; a caller that finds the batch
left in `finalizing` by a crash redoes the work, which is idempotent step by
step (the archive is overwritten, the refund has an idempotency key, the final
UPDATE is conditional). The row becomes final before `batch.completed` is
published, so a client reacting to the event always reads a final status, and
every image's end event goes out before it (`item_ends`); the row then records
the announcement (`completion_announced_at`), and a batch found final but
unannounced (a crash in between) is announced again, same event id.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from lumiku_bgremover import billing, pricing
from lumiku_bgremover.contracts import BatchCompleted, BatchProgress, ObjectRef, subjects
from lumiku_bgremover.contracts.common import BatchStatus, RequestMode
from lumiku_bgremover.contracts.outbound import final_status as status_of_counts
from lumiku_bgremover.db import batches as repo
from lumiku_bgremover.observability.logs import log_ids
from lumiku_bgremover.observability.recorder import PipelineMetrics, batch_seconds
from lumiku_bgremover.observability.tracing import Tracing
from lumiku_bgremover.pipeline.events import Publisher
from lumiku_bgremover.pipeline.item_ends import ItemEnds
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
    """completed if every image succeeded, partial if some did, else cancelled or failed."""
    return status_of_counts(batch.total_items, batch.succeeded, batch.cancelled)


def refund_owed(batch: repo.Batch) -> int:
    """Credits still owed back for the batch's failed and cancelled items.

    Images that failed at intake were never charged: the charge covers the others.
    """
    charge = pricing.BatchCharge(
        count=batch.priced_items,
        credits_per_image=batch.credits_per_image,
        discount_pct=batch.discount_pct,
        total=batch.credits_charged,
    )
    unpaid = batch.failed + batch.cancelled - batch.failed_at_intake
    return pricing.refund_due(charge, unpaid, batch.credits_refunded)


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
        events: Publisher,
        *,
        clock: Clock,
        presign_ttl_s: int,
        max_entry_bytes: int,
        metrics: PipelineMetrics,
        tracing: Tracing | None = None,
    ) -> None:
        self._pool, self._store, self._events, self._clock = pool, store, events, clock
        self.metrics, self._tracing = metrics, tracing or Tracing()
        self._ttl, self._max_entry = presign_ttl_s, max_entry_bytes
        self._ends = ItemEnds(pool, store, events, clock=clock, presign_ttl_s=presign_ttl_s)
        self._last_progress: dict[str, datetime] = {}

    async def progress(self, batch: repo.Batch, *, force: bool = False) -> None:
        """A `batch.progress` event, at most one a second per batch from this process.

        `force` skips the throttle (a cancel is answered at once).
        """
        if not self._due(batch, force=force):
            return
        message = BatchProgress(
            batch_id=batch.id, user_id=batch.user_id, total=batch.total_items,
            succeeded=batch.succeeded, failed=batch.failed, cancelled=batch.cancelled,
            correlation=batch.correlation, updated_at=self._clock(),
        )  # fmt: skip
        await self._events.publish(
            subjects.BATCH_PROGRESS, message, key=f"{batch.id}:{batch.ended}"
        )

    async def announce_ends(self, batch: repo.Batch) -> int:
        """Publish the ended images' events that have not gone out (a cancel's, at once)."""
        return await self._ends.stragglers(batch)

    def _due(self, batch: repo.Batch, *, force: bool) -> bool:
        now = self._clock()
        last = self._last_progress.get(batch.id)
        if batch.all_ended:
            self._last_progress.pop(batch.id, None)
            return True
        if not force and last is not None and (now - last).total_seconds() < PROGRESS_INTERVAL_S:
            return False
        if len(self._last_progress) >= PROGRESS_MEMORY:
            self._last_progress.clear()  # at worst one extra event per batch
        self._last_progress[batch.id] = now
        return True

    async def finalize(self, batch_id: str) -> bool:
        """Finish the batch if all its items ended; True when this call made it final."""
        with (
            self._tracing.span("bgremove.completion", ids={"batch_id": batch_id}),
            log_ids(batch_id=batch_id),
        ):
            return await self._finalize(batch_id)

    async def _finalize(self, batch_id: str) -> bool:
        async with self._pool.acquire() as conn:
            batch = await repo.begin_finalizing(conn, batch_id)
            if batch is None:
                batch = await repo.get_batch(conn, batch_id)
        if batch is None:
            return False
        finished = False
        if batch.status is repo.BatchState.FINALIZING:
            finished = await self._settle(batch)
        await self.announce(batch_id)
        return finished

    async def _settle(self, batch: repo.Batch) -> bool:
        archive = await self._archive(batch)
        async with self._pool.acquire() as conn:
            refunded = await refund_ended(conn, batch)
            if refunded:
                self.metrics.refunded(batch.tier.value, refunded)
            if (
                batch.mode is RequestMode.SINGLE
                and batch.quota_key
                and batch.failed + batch.cancelled
            ):
                await billing.release_quota(conn, idempotency_key=batch.quota_key)
            done = await repo.complete(
                conn, batch.id, status=final_status(batch),
                archive=(archive.bucket, archive.key) if archive else None,
            )  # fmt: skip
        if done is not None:
            seconds = batch_seconds(done.created_at, done.completed_at)
            if seconds is not None:
                self.metrics.batch_finished(done.tier.value, seconds)
            log.info("batch %s %s: %d ok, %d failed, %d cancelled", done.id, done.status,
                     done.succeeded, done.failed, done.cancelled)  # fmt: skip
        return done is not None

    async def announce(self, batch_id: str) -> None:
        """Publish `batch.completed` for a final, unannounced batch, then mark it announced.

        Images whose end event has not gone out (a crash or an outage swallowed it) are
        announced first, so `batch.completed` is the last event of a batch.
        """
        async with self._pool.acquire() as conn:
            batch = await repo.get_batch(conn, batch_id)
        if batch is None or not batch.is_final or batch.completion_announced_at is not None:
            return
        late = await self._ends.stragglers(batch)
        if late:
            log.info("batch %s: announced %d image ends that had not gone out", batch_id, late)
        await self._publish_completed(batch)
        async with self._pool.acquire() as conn:
            await repo.mark_announced(conn, batch_id)

    async def _archive(self, batch: repo.Batch) -> ObjectRef | None:
        if batch.mode is not RequestMode.BATCH or batch.succeeded == 0:
            return None
        async with self._pool.acquire() as conn:
            items = await repo.list_items(conn, batch.id, status=repo.ItemState.DONE)
        extension = (items[0].result_key or "").rsplit(".", 1)[-1]  # one format per batch
        names = zip_names([i.filename for i in items], extension)
        entries = [
            ArchiveEntry(name=name, key=i.result_key or "", bucket=i.result_bucket)
            for name, i in zip(names, items, strict=True)
        ]
        key = archive_key(batch)
        info = await build_archive(self._store, key, entries, max_entry_bytes=self._max_entry)
        return ObjectRef(bucket=info.bucket, key=key)

    async def stored_archive(self, batch: repo.Batch) -> Archive | None:
        """The batch's stored ZIP with a fresh download URL, or None."""
        if batch.archive_bucket is None or batch.archive_key is None:
            return None
        url = await self._store.presigned_get_url(batch.archive_key, ttl_s=self._ttl)
        expires = self._clock() + timedelta(seconds=self._ttl)
        return Archive(ObjectRef(bucket=batch.archive_bucket, key=batch.archive_key), url, expires)

    async def _publish_completed(self, batch: repo.Batch) -> None:
        archive = await self.stored_archive(batch)
        message = BatchCompleted(
            batch_id=batch.id, request_id=batch.request_id, user_id=batch.user_id,
            tier=batch.tier, mode=batch.mode, status=batch.contract_status,
            total=batch.total_items, succeeded=batch.succeeded, failed=batch.failed,
            cancelled=batch.cancelled, archive=archive.ref if archive else None,
            archive_url=archive.url if archive else None,
            archive_url_expires_at=archive.expires_at if archive else None,
            credits_charged=batch.credits_charged, credits_refunded=batch.credits_refunded,
            correlation=batch.correlation, completed_at=batch.completed_at or self._clock(),
        )  # fmt: skip
        await self._events.publish(subjects.BATCH_COMPLETED, message, key=batch.id)


def archive_key(batch: repo.Batch) -> str:
    """Where a batch's ZIP is stored."""
    return f"archives/{batch.user_id}/{batch.id}.zip"
