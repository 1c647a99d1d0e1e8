"""What an owner can do to a batch once it is running: ask how it goes, cancel the rest.

Every cancel is answered: one that takes effect by an `item.failed` (`cancelled`) for
each image it stopped and `batch.progress` (its new `cancelled` count) at once, and
`batch.completed` once the started images end; one
that is refused by `request.rejected` with `not_found` (no such batch of the
caller's, never saying whose it is), `batch_finished` (every image had ended) or
`nothing_to_cancel` (every image had started).
"""

from __future__ import annotations

import hashlib
import logging

import asyncpg

from lumiku_bgremover.billing import Conn
from lumiku_bgremover.contracts import (
    BatchCancel,
    BatchStatusReply,
    BatchStatusRequest,
    ContractError,
    RejectCode,
)
from lumiku_bgremover.contracts.codec import Identity, decode, peek_identity
from lumiku_bgremover.db import batches as repo
from lumiku_bgremover.observability.recorder import CANCELLED, NO_ENGINE
from lumiku_bgremover.pipeline.announce import Announcer
from lumiku_bgremover.pipeline.completion import Finalizer, refund_ended

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
    pool: asyncpg.Pool, finalizer: Finalizer, request: BatchStatusRequest
) -> BatchStatusReply:
    """The stored progress of the owner's batch (with a fresh archive URL once zipped)."""
    async with pool.acquire() as conn:
        batch = await owned_batch(conn, request.batch_id, request.user_id)
    archive = await finalizer.stored_archive(batch)
    return BatchStatusReply(
        batch_id=batch.id, request_id=batch.request_id, user_id=batch.user_id,
        tier=batch.tier, mode=batch.mode, batch_status=batch.contract_status,
        total=batch.total_items, succeeded=batch.succeeded, failed=batch.failed,
        cancelled=batch.cancelled, credits_charged=batch.credits_charged,
        credits_refunded=batch.credits_refunded, archive=archive.ref if archive else None,
        archive_url=archive.url if archive else None, created_at=batch.created_at,
        updated_at=batch.updated_at, completed_at=batch.completed_at,
        correlation=batch.correlation,
    )  # fmt: skip


def refusal(batch: repo.Batch, cancelled: int) -> ContractError | None:
    """Why a cancel of the caller's own batch changed nothing, or None when it did."""
    if cancelled:
        return None
    if batch.all_ended:
        return ContractError(
            RejectCode.BATCH_FINISHED, f"batch {batch.id} has ended: nothing to cancel",
            "$.batch_id",
        )  # fmt: skip
    return ContractError(
        RejectCode.NOTHING_TO_CANCEL,
        f"every image of batch {batch.id} has already started or ended",
        "$.batch_id",
    )


async def cancel_batch(pool: asyncpg.Pool, finalizer: Finalizer, request: BatchCancel) -> int:
    """Cancel the owner's pending items and refund them; how many were cancelled.

    Items already being processed finish. Raises `ContractError` (`not_found`,
    `batch_finished`, `nothing_to_cancel`) when the cancel changes nothing.
    """
    async with pool.acquire() as conn:
        await owned_batch(conn, request.batch_id, request.user_id)
        cancelled, batch = await repo.cancel_pending(conn, request.batch_id)
        refunded = await refund_ended(conn, batch) if batch is not None and cancelled else 0
    if batch is None:
        raise not_found(request.batch_id)
    for _ in cancelled:
        finalizer.metrics.item_finished(batch.tier.value, NO_ENGINE, CANCELLED)
    if refunded:
        finalizer.metrics.refunded(batch.tier.value, refunded)
    reason = refusal(batch, len(cancelled))
    await finalizer.announce_ends(batch)  # also what an earlier try of this cancel owed
    if reason is None:
        log.info("batch %s: %d pending items cancelled", batch.id, len(cancelled))
        await finalizer.progress(batch, force=True)
    if batch.all_ended:
        await finalizer.finalize(batch.id)
    if reason is not None:
        raise reason
    return len(cancelled)


async def on_cancel(
    pool: asyncpg.Pool,
    finalizer: Finalizer,
    announcer: Announcer,
    data: bytes,
    *,
    message_key: str | None = None,
) -> None:
    """Handle a raw `bgremove.batch.cancel` body: cancel, or answer why not.

    `message_key` names the inbound message (its stream sequence): a redelivery of it
    repeats the answer's event id, so JetStream keeps one, while a cancel sent again
    later is a new request and gets its own answer. A cancel has no request id of its own.
    """
    suffix = "" if message_key is None else f":{message_key}"
    try:
        request = decode(BatchCancel, data)
    except ContractError as error:
        key = "cancel:" + hashlib.sha256(data).hexdigest()[:32] + suffix
        await announcer.rejected(peek_identity(data), error.code, error.message, error.path, key)
        return
    try:
        await cancel_batch(pool, finalizer, request)
    except ContractError as error:
        identity = Identity(None, request.user_id, request.correlation)
        key = f"cancel:{request.batch_id}:{request.user_id}{suffix}"
        await announcer.rejected(
            identity, error.code, error.message, error.path, key, batch_id=request.batch_id
        )
