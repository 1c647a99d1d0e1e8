"""Batches and their items on PostgreSQL. Every state change is a conditional UPDATE.

A redelivered message finds its row already moved on and changes nothing; the
batch's counters move in the same statement as the item, so they always agree;
exactly one caller wins each transition (`begin_finalizing`, `complete`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

from lumiku_bgremover.billing import Conn

#: Item states that are final.
FINAL_ITEM_STATES = ("done", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class NewBatch:
    """A batch as intake creates it (already priced)."""

    id: str
    request_id: str
    user_id: str
    tier: str
    mode: str
    lane: str
    pricing_type: str
    total_items: int
    credits_per_image: int
    base_total: int
    discount_pct: int
    discount: int
    credits_charged: int
    options: dict[str, Any]
    correlation: dict[str, Any] | None
    subscription_id: UUID | None = None
    quota_key: str | None = None


@dataclass(frozen=True, slots=True)
class NewItem:
    """One image of a new batch."""

    id: str
    idx: int
    filename: str
    source: dict[str, Any]
    declared_size: int | None


@dataclass(frozen=True, slots=True)
class Batch:
    """A batch row."""

    id: str
    request_id: str
    user_id: str
    tier: str
    mode: str
    lane: str
    status: str
    pricing_type: str
    total_items: int
    succeeded: int
    failed: int
    cancelled: int
    credits_per_image: int
    base_total: int
    discount_pct: int
    discount: int
    credits_charged: int
    credits_refunded: int
    options: dict[str, Any]
    correlation: dict[str, Any] | None
    subscription_id: UUID | None
    quota_key: str | None
    archive_bucket: str | None
    archive_key: str | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None

    @property
    def ended(self) -> int:
        """Items in a final state."""
        return self.succeeded + self.failed + self.cancelled

    @property
    def all_ended(self) -> bool:
        """Every item is done, failed or cancelled."""
        return self.ended == self.total_items


@dataclass(frozen=True, slots=True)
class Item:
    """A batch item row."""

    id: str
    batch_id: str
    idx: int
    filename: str
    source: dict[str, Any]
    declared_size: int | None
    status: str
    attempts: int
    result_bucket: str | None
    result_key: str | None
    result_size: int | None
    width: int | None
    height: int | None
    content_type: str | None
    engine: str | None
    model: str | None
    processing_ms: int | None
    cost_idr: Decimal | None
    error_code: str | None
    error_message: str | None
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class ItemResult:
    """What a processed item stores."""

    bucket: str
    key: str
    size: int
    width: int
    height: int
    content_type: str
    engine: str
    model: str
    processing_ms: int
    cost_idr: Decimal | None


_BATCH_COLUMNS = ", ".join(Batch.__dataclass_fields__)
_ITEM_COLUMNS = ", ".join(Item.__dataclass_fields__)


def _batch(row: asyncpg.Record | None) -> Batch | None:
    return None if row is None else Batch(**dict(row))


def _item(row: asyncpg.Record | None) -> Item | None:
    return None if row is None else Item(**dict(row))


async def insert_batch(conn: Conn, batch: NewBatch, items: Sequence[NewItem]) -> bool:
    """Create the batch and its items; False (nothing written) when the request id exists."""
    async with conn.transaction():
        created = await conn.fetchval(
            """
            INSERT INTO batches (id, request_id, user_id, tier, mode, lane, pricing_type,
                total_items, credits_per_image, base_total, discount_pct, discount,
                credits_charged, options, correlation, subscription_id, quota_key)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
            ON CONFLICT (request_id) DO NOTHING
            RETURNING true
            """,
            batch.id, batch.request_id, batch.user_id, batch.tier, batch.mode, batch.lane,
            batch.pricing_type, batch.total_items, batch.credits_per_image, batch.base_total,
            batch.discount_pct, batch.discount, batch.credits_charged, batch.options,
            batch.correlation, batch.subscription_id, batch.quota_key,
        )  # fmt: skip
        if not created:
            return False
        await conn.executemany(
            """
            INSERT INTO batch_items (id, batch_id, idx, filename, source, declared_size)
            VALUES ($1, $2, $3, $4, $5, $6)
            """,
            [(i.id, batch.id, i.idx, i.filename, i.source, i.declared_size) for i in items],
        )
        return True


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


async def list_items(conn: Conn, batch_id: str, *, status: str | None = None) -> list[Item]:
    """The batch's items in order, optionally of one status."""
    rows = await conn.fetch(
        f"SELECT {_ITEM_COLUMNS} FROM batch_items "  # noqa: S608
        "WHERE batch_id = $1 AND ($2::text IS NULL OR status = $2) ORDER BY idx",
        batch_id,
        status,
    )
    return [Item(**dict(row)) for row in rows]


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
                model = $9, processing_ms = $10, cost_idr = $11, finished_at = now(),
                error_code = NULL, error_message = NULL
            WHERE id = $1 AND status = 'processing'
            RETURNING batch_id
            """,
            item_id, result.bucket, result.key, result.size, result.width, result.height,
            result.content_type, result.engine, result.model, result.processing_ms,
            result.cost_idr,
        )  # fmt: skip
        return await _count(conn, batch_id, "succeeded")


async def fail_item(conn: Conn, item_id: str, code: str, message: str) -> Batch | None:
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
            code,
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
    conn: Conn, batch_id: str, *, status: str, archive: tuple[str, str] | None
) -> Batch | None:
    """finalizing -> completed|cancelled|failed with the archive; None if already done."""
    bucket, key = archive or (None, None)
    row = await conn.fetchrow(
        f"""
        UPDATE batches SET status = $2, archive_bucket = $3, archive_key = $4,
            completed_at = now()
        WHERE id = $1 AND status = 'finalizing'
        RETURNING {_BATCH_COLUMNS}
        """,  # noqa: S608
        batch_id,
        status,
        bucket,
        key,
    )
    return _batch(row)
