"""Deleting finished batches (their items go with them) older than a retention period.

The credit ledger is kept: it is the record of what was charged and refunded. Result
objects expire on their own through the bucket's lifecycle rules (`provision`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from lumiku_bgremover.billing import Conn
from lumiku_bgremover.db.rows import FINAL_STATES

__all__ = ["FINAL_STATUSES", "Cleanup", "count_finished", "delete_finished"]

#: Stored batch states that no message can change any more (`partial` among them).
FINAL_STATUSES = tuple(sorted(state.value for state in FINAL_STATES))
#: Batches deleted per statement, so no lock is held for long.
CHUNK = 500

_DELETE = """
WITH doomed AS (
    DELETE FROM batches WHERE id IN (
        SELECT id FROM batches
        WHERE status = ANY($1::text[]) AND completed_at < $2
        ORDER BY completed_at
        LIMIT $3
    )
    RETURNING total_items
)
SELECT count(*)::bigint, coalesce(sum(total_items), 0)::bigint FROM doomed
"""

_COUNT = """
SELECT count(*)::bigint, coalesce(sum(total_items), 0)::bigint FROM batches
WHERE status = ANY($1::text[]) AND completed_at < $2
"""


@dataclass(frozen=True, slots=True)
class Cleanup:
    """How many batches and items were (or would be) deleted."""

    batches: int
    items: int


async def count_finished(conn: Conn, before: datetime) -> Cleanup:
    """What `delete_finished` would delete (a dry run)."""
    row = await conn.fetchrow(_COUNT, list(FINAL_STATUSES), before)
    assert row is not None
    return Cleanup(batches=int(row[0]), items=int(row[1]))


async def delete_finished(conn: Conn, before: datetime, *, chunk: int = CHUNK) -> Cleanup:
    """Delete batches finished before `before`, `chunk` at a time; totals deleted."""
    batches = items = 0
    while True:
        row = await conn.fetchrow(_DELETE, list(FINAL_STATUSES), before, chunk)
        assert row is not None
        batches, items = batches + int(row[0]), items + int(row[1])
        if int(row[0]) < chunk:
            return Cleanup(batches=batches, items=items)
