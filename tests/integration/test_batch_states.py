"""Every state the database can store maps to a state of the contract (read from the SQL)."""

import re
from collections import Counter

import asyncpg
import pytest

from lumiku_bgremover.contracts import BatchCompleted, BatchProgress, BatchStatusReply
from lumiku_bgremover.contracts.codes import FailCode
from lumiku_bgremover.contracts.common import (
    BatchStatus,
    ImageRef,
    OutputOptions,
    PricingType,
    RequestMode,
    Tier,
)
from lumiku_bgremover.contracts.work import Lane
from lumiku_bgremover.db import batches as repo

pytestmark = pytest.mark.integration

RESULT = repo.ItemResult(
    bucket="bkt", key="results/u1/bc/bc-3.png", size=10, width=2, height=2,
    content_type="image/png", engine="fake", model="fake", processing_ms=1, cost_idr=None,
)  # fmt: skip


def new_batch(batch_id: str, total: int) -> repo.NewBatch:
    return repo.NewBatch(
        id=batch_id, request_id=batch_id, user_id="u1", tier=Tier.BASIC,
        mode=RequestMode.BATCH, lane=Lane.BULK, pricing_type=PricingType.CREDITS,
        total_items=total, credits_per_image=3, base_total=3 * total, discount_pct=0,
        discount=0, credits_charged=3 * total, options=OutputOptions(), correlation=None,
    )  # fmt: skip


async def check_values(pool: asyncpg.Pool, constraint: str) -> set[str]:
    """The string literals of a CHECK constraint, as PostgreSQL itself prints it."""
    definition = await pool.fetchval(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = $1", constraint
    )
    assert definition is not None, f"no constraint {constraint}"
    return set(re.findall(r"'([a-z_]+)'::text", definition))


async def test_every_stored_batch_state_maps_to_a_contract_status(db_pool: asyncpg.Pool) -> None:
    stored = await check_values(db_pool, "batches_status_check")
    assert stored == {state.value for state in repo.BatchState}
    mapped = {value: repo.contract_status(repo.BatchState(value)) for value in stored}
    assert set(mapped.values()) == set(BatchStatus)  # and every contract status is reachable
    final = await check_values(db_pool, "batches_completed_when_final")
    assert final == {value for value, status in mapped.items() if status.is_final}


async def test_every_stored_item_state_maps_to_a_contract_count(db_pool: asyncpg.Pool) -> None:
    stored = await check_values(db_pool, "batch_items_status_check")
    assert stored == {state.value for state in repo.ItemState}
    shown = {value: repo.ITEM_COUNTED_AS[repo.ItemState(value)] for value in stored}
    counts = {count for count in shown.values() if count is not None}
    assert counts == {"succeeded", "failed", "cancelled"}
    for struct in (BatchProgress, BatchStatusReply, BatchCompleted):
        assert counts <= set(struct.__struct_fields__), struct
    ended = {value for value, count in shown.items() if count is not None}
    assert ended == {state.value for state in repo.FINAL_ITEM_STATES}


async def test_the_batch_counts_its_items_as_the_mapping_says(db_pool: asyncpg.Pool) -> None:
    """Items moved by the repository into every state a batch can hold once its pending
    ones are cancelled: the batch's counters agree with the mapping."""
    items = [
        repo.NewItem(id=f"bc-{i}", idx=i, filename=f"{i}.png", declared_size=None,
                     source=ImageRef(bucket="bkt", key=f"originals/u1/{i}.png"))
        for i in range(5)
    ]  # fmt: skip
    async with db_pool.acquire() as conn:
        assert await repo.insert_batch(conn, new_batch("bc", len(items)), items)
        for item_id in ("bc-2", "bc-3"):
            assert await repo.claim_item(conn, item_id) is not None
        assert await repo.finish_item(conn, "bc-3", RESULT) is not None
        assert await repo.fail_item(conn, "bc-4", FailCode.DECODE_FAILED, "junk") is not None
        cancelled, _ = await repo.cancel_pending(conn, "bc")
        rows = await repo.list_items(conn, "bc")
        batch = await repo.get_batch(conn, "bc")
    assert batch is not None
    assert sorted(cancelled) == ["bc-0", "bc-1"]
    states = {row.id: row.status for row in rows}
    assert set(states.values()) == set(repo.ItemState) - {repo.ItemState.PENDING}
    shown = Counter(repo.ITEM_COUNTED_AS[row.status] for row in rows)
    assert (shown["succeeded"], shown["failed"], shown["cancelled"]) == (
        batch.succeeded, batch.failed, batch.cancelled)  # fmt: skip
    assert shown[None] == batch.total_items - batch.ended == 1


async def test_a_row_in_each_state_reads_back_typed(db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as conn:
        for state in repo.BatchState:
            final = state in repo.FINAL_STATES
            await conn.execute(
                """
                INSERT INTO batches (id, request_id, user_id, tier, status, total_items,
                    succeeded, credits_per_image, base_total, completed_at)
                VALUES ($1, $1, 'u1', 'basic', $2, 1, $3, 3, 3,
                    CASE WHEN $4 THEN now() END)
                """,
                f"b-{state}", state.value, 1 if final else 0, final,
            )  # fmt: skip
            batch = await repo.get_batch(conn, f"b-{state}")
            assert batch is not None
            assert batch.status is state
            assert batch.contract_status is repo.contract_status(state)
            assert batch.is_final is final
