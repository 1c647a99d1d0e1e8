"""Every state the database can store maps to a state of the contract (read from the SQL)."""

import re

import asyncpg
import pytest

from lumiku_bgremover.contracts.common import BatchStatus
from lumiku_bgremover.db import batches as repo

pytestmark = pytest.mark.integration


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


async def test_every_stored_item_state_is_decoded(db_pool: asyncpg.Pool) -> None:
    stored = await check_values(db_pool, "batch_items_status_check")
    assert stored == {state.value for state in repo.ItemState}
    assert set(repo.ItemState) > repo.FINAL_ITEM_STATES


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
