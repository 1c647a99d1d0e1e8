"""What an owner can do to a batch once it is running: ask how it goes, cancel the rest."""

from __future__ import annotations

import logging

import asyncpg

from lumiku_bgremover.billing import Conn
from lumiku_bgremover.contracts import (
    BatchCancel,
    BatchStatusReply,
    BatchStatusRequest,
    ContractError,
    ObjectRef,
    RejectCode,
)
from lumiku_bgremover.contracts.common import BatchStatus, RequestMode, Tier
from lumiku_bgremover.pipeline import repository as repo
from lumiku_bgremover.pipeline.completion import Finalizer, correlation_of, refund_ended
from lumiku_bgremover.storage import ObjectStore

log = logging.getLogger(__name__)


def not_found(batch_id: str) -> ContractError:
    """The same answer for a missing batch and somebody else's: nothing leaks."""
    return ContractError(RejectCode.NOT_FOUND, f"no batch {batch_id} of yours", "$.batch_id")


async def owned_batch(conn: Conn, batch_id: str, user_id: str) -> repo.Batch:
    """The batch if `user_id` owns it; else `ContractError(not_found)`."""
    batch = await repo.get_batch(conn, batch_id)
    if batch is None or batch.user_id != user_id:
        raise not_found(batch_id)
    return batch


async def batch_status(
    pool: asyncpg.Pool, store: ObjectStore, request: BatchStatusRequest, *, presign_ttl_s: int
) -> BatchStatusReply:
    """The stored progress of the owner's batch (with a fresh archive URL once zipped)."""
    async with pool.acquire() as conn:
        batch = await owned_batch(conn, request.batch_id, request.user_id)
    archive = (
        ObjectRef(bucket=batch.archive_bucket, key=batch.archive_key)
        if batch.archive_bucket and batch.archive_key
        else None
    )
    url = await store.presigned_get_url(archive.key, ttl_s=presign_ttl_s) if archive else None
    return BatchStatusReply(
        batch_id=batch.id, request_id=batch.request_id, user_id=batch.user_id,
        tier=Tier(batch.tier), mode=RequestMode(batch.mode),
        batch_status=BatchStatus(batch.status), total=batch.total_items,
        succeeded=batch.succeeded, failed=batch.failed, cancelled=batch.cancelled,
        credits_charged=batch.credits_charged, credits_refunded=batch.credits_refunded,
        archive=archive, archive_url=url, created_at=batch.created_at,
        updated_at=batch.updated_at, completed_at=batch.completed_at,
        correlation=correlation_of(batch),
    )  # fmt: skip


async def cancel_batch(pool: asyncpg.Pool, finalizer: Finalizer, request: BatchCancel) -> int:
    """Cancel the owner's pending items and refund them; how many were cancelled.

    Items already being processed finish; cancelling again is a no-op. Raises
    `ContractError(not_found)` for a batch the user does not own.
    """
    async with pool.acquire() as conn:
        await owned_batch(conn, request.batch_id, request.user_id)
        cancelled, batch = await repo.cancel_pending(conn, request.batch_id)
        if batch is not None and cancelled:
            await refund_ended(conn, batch)
    if batch is None:
        return 0
    log.info("batch %s: %d pending items cancelled", batch.id, len(cancelled))
    if cancelled:
        await finalizer.progress(batch)
    if batch.all_ended:
        await finalizer.finalize(batch.id)
    return len(cancelled)
