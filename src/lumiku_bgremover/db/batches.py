"""Batches and their items on PostgreSQL. Every state change is a conditional UPDATE.

A redelivered message finds its row already moved on and changes nothing; the
batch's counters move in the same statement as the item, so they always agree;
exactly one caller wins each transition (`begin_finalizing`, `complete`).

Rows come back typed: stored states, tiers, modes and lanes are decoded into
enums here, once (`Batch.from_row`, `Item.from_row`), and `contract_status` is
the one mapping from a stored batch state to the contract's `BatchStatus`.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import msgspec

from lumiku_bgremover.billing import Conn
from lumiku_bgremover.contracts.codes import FailCode
from lumiku_bgremover.contracts.common import BatchStatus
from lumiku_bgremover.db.rows import (
    CONTRACT_STATUS,
    FINAL_ITEM_STATES,
    FINAL_STATES,
    ITEM_COUNTED_AS,
    Batch,
    BatchState,
    Item,
    ItemResult,
    ItemState,
    NewBatch,
    NewItem,
    contract_status,
    stored_state,
)

__all__ = [
    "CONTRACT_STATUS",
    "FINAL_ITEM_STATES",
    "FINAL_STATES",
    "ITEM_COUNTED_AS",
    "Batch",
    "BatchState",
    "Item",
    "ItemResult",
    "ItemState",
    "NewBatch",
    "NewItem",
    "begin_finalizing",
    "cancel_pending",
    "claim_item",
    "complete",
    "contract_status",
    "fail_item",
    "finish_item",
    "get_batch",
    "get_batch_by_request",
    "insert_batch",
    "list_items",
    "mark_announced",
    "mark_items_announced",
    "record_refund",
    "unannounced_items",
]

_BATCH_COLUMNS = ", ".join(Batch.__dataclass_fields__)
_ITEM_COLUMNS = ", ".join(Item.__dataclass_fields__)


def _batch(row: asyncpg.Record | None) -> Batch | None:
    return None if row is None else Batch.from_row(dict(row))


def _item(row: asyncpg.Record | None) -> Item | None:
    return None if row is None else Item.from_row(dict(row))


async def insert_batch(conn: Conn, batch: NewBatch, items: Sequence[NewItem]) -> bool:
    """Create the batch and its items; False (nothing written) when the request id exists.

    Items with a `failure` are stored failed at once and counted in `failed`.
    """
    failed = sum(1 for item in items if item.failure is not None)
    async with conn.transaction():
        created = await conn.fetchval(
            """
            INSERT INTO batches (id, request_id, user_id, tier, mode, lane, pricing_type,
                total_items, credits_per_image, base_total, discount_pct, discount,
                credits_charged, options, correlation, subscription_id, quota_key,
                failed, failed_at_intake, then_upscale_scale)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                $18, $19, $20)
            ON CONFLICT (request_id) DO NOTHING
            RETURNING true
            """,
            batch.id, batch.request_id, batch.user_id, batch.tier.value, batch.mode.value,
            batch.lane.value, batch.pricing_type.value, batch.total_items,
            batch.credits_per_image, batch.base_total, batch.discount_pct, batch.discount,
            batch.credits_charged, msgspec.to_builtins(batch.options),
            None if batch.correlation is None else msgspec.to_builtins(batch.correlation),
            batch.subscription_id, batch.quota_key, failed, batch.failed_at_intake,
            batch.then_upscale_scale,
        )  # fmt: skip
        if not created:
            return False
        await conn.executemany(
            """
            INSERT INTO batch_items (id, batch_id, idx, filename, source, declared_size,
                status, error_code, error_message, source_id, finished_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
                CASE WHEN $7 = 'failed' THEN now() END)
            """,
            [_item_values(batch.id, item) for item in items],
        )
        return True


def _item_values(batch_id: str, item: NewItem) -> tuple[object, ...]:
    state = ItemState.PENDING if item.failure is None else ItemState.FAILED
    code, message = item.failure or (None, None)
    return (
        item.id, batch_id, item.idx, item.filename, msgspec.to_builtins(item.source),
        item.declared_size, state.value, code, message if message is None else message[:1000],
        item.source_id,
    )  # fmt: skip


async def get_batch(conn: Conn, batch_id: str) -> Batch | None:
    """The batch, or None."""
    row = await conn.fetchrow(f"SELECT {_BATCH_COLUMNS} FROM batches WHERE id = $1", batch_id)  # noqa: S608
    return _batch(row)


async def get_batch_by_request(conn: Conn, request_id: str) -> Batch | None:
    """The batch a request created, or None."""
    row = await conn.fetchrow(
        f"SELECT {_BATCH_COLUMNS} FROM batches WHERE request_id = $1",  # noqa: S608
        request_id,
    )
    return _batch(row)


async def list_items(conn: Conn, batch_id: str, *, status: ItemState | None = None) -> list[Item]:
    """The batch's items in order, optionally of one status."""
    rows = await conn.fetch(
        f"SELECT {_ITEM_COLUMNS} FROM batch_items "  # noqa: S608
        "WHERE batch_id = $1 AND ($2::text IS NULL OR status = $2) ORDER BY idx",
        batch_id,
        None if status is None else status.value,
    )
    return [Item.from_row(dict(row)) for row in rows]


async def claim_item(conn: Conn, item_id: str) -> Item | None:
    """Mark an item processing (another attempt); None when it already ended."""
    async with conn.transaction():
        row = await conn.fetchrow(
            f"""
            UPDATE batch_items SET status = 'processing', attempts = attempts + 1,
                started_at = COALESCE(started_at, now())
            WHERE id = $1 AND status IN ('pending', 'processing')
            RETURNING {_ITEM_COLUMNS}
            """,  # noqa: S608
            item_id,
        )
        if row is not None:
            await conn.execute(
                "UPDATE batches SET status = 'processing' WHERE id = $1 AND status = 'accepted'",
                row["batch_id"],
            )
        return _item(row)


async def finish_item(conn: Conn, item_id: str, result: ItemResult) -> Batch | None:
    """processing -> done, counted on the batch; the updated batch, or None if a no-op."""
    async with conn.transaction():
        batch_id = await conn.fetchval(
            """
            UPDATE batch_items SET status = 'done', result_bucket = $2, result_key = $3,
                result_size = $4, width = $5, height = $6, content_type = $7, engine = $8,
                model = $9, processing_ms = $10, cost_idr = $11, provider = $12,
                engine_ms = $13, engine_attempts = $14, engine_fallback = $15,
                finished_at = now(), error_code = NULL, error_message = NULL
            WHERE id = $1 AND status = 'processing'
            RETURNING batch_id
            """,
            item_id, result.bucket, result.key, result.size, result.width, result.height,
            result.content_type, result.engine, result.model, result.processing_ms,
            result.cost_idr, result.provider, result.engine_ms, result.engine_attempts,
            result.engine_fallback,
        )  # fmt: skip
        return await _count(conn, batch_id, "succeeded")


async def fail_item(conn: Conn, item_id: str, code: FailCode, message: str) -> Batch | None:
    """pending|processing -> failed, counted on the batch; None if it had ended already."""
    async with conn.transaction():
        batch_id = await conn.fetchval(
            """
            UPDATE batch_items SET status = 'failed', error_code = $2, error_message = $3,
                finished_at = now()
            WHERE id = $1 AND status IN ('pending', 'processing')
            RETURNING batch_id
            """,
            item_id,
            code.value,
            message[:1000],
        )
        return await _count(conn, batch_id, "failed")


async def _count(conn: Conn, batch_id: str | None, column: str) -> Batch | None:
    if batch_id is None:
        return None
    row = await conn.fetchrow(
        f"UPDATE batches SET {column} = {column} + 1 WHERE id = $1 RETURNING {_BATCH_COLUMNS}",  # noqa: S608
        batch_id,
    )
    return _batch(row)


async def cancel_pending(conn: Conn, batch_id: str) -> tuple[list[str], Batch | None]:
    """pending items -> cancelled; their ids and the updated batch."""
    async with conn.transaction():
        ids = [
            r["id"]
            for r in await conn.fetch(
                "UPDATE batch_items SET status = 'cancelled', finished_at = now() "
                "WHERE batch_id = $1 AND status = 'pending' RETURNING id",
                batch_id,
            )
        ]
        row = await conn.fetchrow(
            f"UPDATE batches SET cancelled = cancelled + $2 WHERE id = $1 "  # noqa: S608
            f"RETURNING {_BATCH_COLUMNS}",
            batch_id,
            len(ids),
        )
        return ids, _batch(row)


async def begin_finalizing(conn: Conn, batch_id: str) -> Batch | None:
    """accepted|processing -> finalizing once every item ended; only one caller wins."""
    row = await conn.fetchrow(
        f"""
        UPDATE batches SET status = 'finalizing'
        WHERE id = $1 AND status IN ('accepted', 'processing')
          AND succeeded + failed + cancelled = total_items
        RETURNING {_BATCH_COLUMNS}
        """,  # noqa: S608
        batch_id,
    )
    return _batch(row)


async def record_refund(conn: Conn, batch_id: str, amount: int) -> None:
    """Add a refund that the ledger accepted to the batch's total."""
    await conn.execute(
        "UPDATE batches SET credits_refunded = credits_refunded + $2 WHERE id = $1",
        batch_id,
        amount,
    )


async def complete(
    conn: Conn, batch_id: str, *, status: BatchStatus, archive: tuple[str, str] | None
) -> Batch | None:
    """finalizing -> a final state with the archive; None if it was final already."""
    bucket, key = archive or (None, None)
    row = await conn.fetchrow(
        f"""
        UPDATE batches SET status = $2, archive_bucket = $3, archive_key = $4,
            completed_at = now()
        WHERE id = $1 AND status = 'finalizing'
        RETURNING {_BATCH_COLUMNS}
        """,  # noqa: S608
        batch_id,
        stored_state(status).value,
        bucket,
        key,
    )
    return _batch(row)


async def mark_announced(conn: Conn, batch_id: str) -> bool:
    """Record that `batch.completed` went out; False when it was recorded before."""
    marked = await conn.fetchval(
        """
        UPDATE batches SET completion_announced_at = now()
        WHERE id = $1 AND completed_at IS NOT NULL AND completion_announced_at IS NULL
        RETURNING true
        """,
        batch_id,
    )
    return bool(marked)


async def mark_items_announced(conn: Conn, item_ids: Sequence[str]) -> None:
    """Record that these ended items' `item.done` / `item.failed` went out (idempotent)."""
    await conn.execute(
        "UPDATE batch_items SET announced_at = now() "
        "WHERE id = ANY($1::text[]) AND announced_at IS NULL "
        "AND status IN ('done', 'failed', 'cancelled')",
        list(item_ids),
    )


async def unannounced_items(conn: Conn, batch_id: str) -> list[Item]:
    """The batch's ended (done, failed, cancelled) items whose event has not gone out."""
    rows = await conn.fetch(
        f"SELECT {_ITEM_COLUMNS} FROM batch_items "  # noqa: S608
        "WHERE batch_id = $1 AND announced_at IS NULL "
        "AND status IN ('done', 'failed', 'cancelled') ORDER BY idx",
        batch_id,
    )
    return [Item.from_row(dict(row)) for row in rows]
