"""Migrations on a real PostgreSQL: applying, re-running, locking, drift, and the schema."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from lumiku_bgremover.db import (
    MIGRATION_LOCK_KEY,
    Migration,
    MigrationError,
    connect,
    load_migrations,
    migrate,
    pending,
)

pytestmark = pytest.mark.integration

TABLES = {
    "schema_migrations",
    "credit_accounts",
    "credit_ledger",
    "subscriptions",
    "daily_usage",
    "batches",
    "batch_items",
    "quota_consumptions",
    "integration_settings",
    "batch_notifications",
}


def fake(version: int, label: str, sql: str) -> Migration:
    return Migration(version, f"{version:04d}_{label}", sql, f"{version:064x}")


async def tables(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {row["tablename"] for row in rows}


async def recorded(conn: asyncpg.Connection) -> list[tuple[Any, ...]]:
    rows = await conn.fetch("SELECT * FROM schema_migrations ORDER BY version")
    return [tuple(row.values()) for row in rows]


async def lock_is_free(url: str) -> bool:
    async with connect(url) as other:
        free = await other.fetchval("SELECT pg_try_advisory_lock($1)", MIGRATION_LOCK_KEY)
        if free:
            await other.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
        return bool(free)


async def test_migrate_applies_the_initial_schema_and_records_it(database_url: str) -> None:
    async with connect(database_url) as conn:
        assert await tables(conn) == set()
        assert await pending(conn) == [m.name for m in load_migrations()]
        applied = await migrate(conn)
        assert applied[0] == "0001_initial"
        assert applied == [m.name for m in load_migrations()]
        assert await tables(conn) >= TABLES
        rows = await conn.fetch("SELECT version, name, checksum, applied_at FROM schema_migrations")
        assert [(r["version"], r["name"], r["checksum"]) for r in rows] == [
            (m.version, m.name, m.checksum) for m in load_migrations()
        ]
        assert all(r["applied_at"] is not None for r in rows)
        assert await pending(conn) == []
        assert await lock_is_free(database_url)  # released while the session lives on


async def test_second_run_is_a_no_op(database_url: str) -> None:
    async with connect(database_url) as conn:
        await migrate(conn)
        before = await recorded(conn)
        columns = "SELECT table_name, column_name, data_type FROM information_schema.columns"
        schema_before = await conn.fetch(columns)
        assert await migrate(conn) == []
        assert await recorded(conn) == before
        assert await conn.fetch(columns) == schema_before


async def test_concurrent_runs_apply_each_migration_once(database_url: str) -> None:
    async with connect(database_url) as first, connect(database_url) as second:
        results = await asyncio.gather(migrate(first), migrate(second))
        assert sorted(results) == [[], [m.name for m in load_migrations()]]
        assert len(await recorded(first)) == len(load_migrations())


async def test_concurrent_slow_migration_runs_once(database_url: str) -> None:
    slow = [
        fake(
            1, "slow", "CREATE TABLE ran (n int); INSERT INTO ran VALUES (1); SELECT pg_sleep(0.3);"
        )
    ]
    async with connect(database_url) as first, connect(database_url) as second:
        results = await asyncio.gather(migrate(first, slow), migrate(second, slow))
        assert sorted(results) == [[], ["0001_slow"]]
        assert await first.fetchval("SELECT count(*) FROM ran") == 1


async def test_migrate_waits_for_the_advisory_lock(database_url: str) -> None:
    async with connect(database_url) as holder, connect(database_url) as conn:
        await holder.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        task = asyncio.create_task(migrate(conn))
        await asyncio.sleep(0.3)
        assert not task.done()
        assert await holder.fetchval("SELECT to_regclass('schema_migrations')") is None
        await holder.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
        assert await asyncio.wait_for(task, 10) == [m.name for m in load_migrations()]


async def test_changed_checksum_is_refused_by_name(database_url: str) -> None:
    async with connect(database_url) as conn:
        await migrate(conn)
        await conn.execute("UPDATE schema_migrations SET checksum = $1 WHERE version = 1", "0" * 64)
        with pytest.raises(MigrationError, match="0001_initial"):
            await migrate(conn)
        with pytest.raises(MigrationError, match="0001_initial"):
            await pending(conn)
        assert await lock_is_free(database_url)


async def test_failed_migration_is_rolled_back_and_later_ones_wait(database_url: str) -> None:
    steps = [
        fake(1, "good", "CREATE TABLE good (n int);"),
        fake(2, "bad", "CREATE TABLE half (n int); SELECT 1 / 0;"),
        fake(3, "after", "CREATE TABLE after (n int);"),
    ]
    async with connect(database_url) as conn:
        with pytest.raises(MigrationError, match="0002_bad"):
            await migrate(conn, steps)
        assert await tables(conn) == {"schema_migrations", "good"}
        assert [row[1] for row in await recorded(conn)] == ["0001_good"]
        assert await pending(conn, steps) == ["0002_bad", "0003_after"]
        assert await lock_is_free(database_url)


async def test_a_migration_and_its_record_commit_together(database_url: str) -> None:
    # The migration succeeds but recording it fails (its version is taken): neither stays.
    clash = fake(
        1,
        "clash",
        "CREATE TABLE made (n int);"
        " INSERT INTO schema_migrations (version, name, checksum) VALUES (1, 'x', 'y');",
    )
    async with connect(database_url) as conn:
        with pytest.raises(MigrationError, match="0001_clash"):
            await migrate(conn, [clash])
        assert await tables(conn) == {"schema_migrations"}
        assert await recorded(conn) == []


async def test_new_migrations_are_applied_after_old_ones(database_url: str) -> None:
    old = [fake(1, "one", "CREATE TABLE one (n int);")]
    new = [*old, fake(2, "two", "ALTER TABLE one ADD COLUMN m int;")]
    async with connect(database_url) as conn:
        assert await migrate(conn, old) == ["0001_one"]
        assert await pending(conn, new) == ["0002_two"]
        assert await migrate(conn, new) == ["0002_two"]
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM information_schema.columns WHERE table_name = 'one'"
            )
            == 2
        )


# The schema's constraints -----------------------------------------------------------------

VALID: dict[str, dict[str, Any]] = {
    "credit_accounts": {"user_id": "u1", "balance": 100},
    "credit_ledger": {
        "user_id": "u1",
        "amount": -24,
        "balance_after": 76,
        "reason": "batch_charge",
        "reference_type": "batch",
        "reference_id": "b1",
        "idempotency_key": "charge:b1",
    },
    "subscriptions": {
        "user_id": "u1",
        "plan": "pro",
        "expires_at": datetime.now(UTC) + timedelta(days=30),
        "daily_quota": 200,
        "professional_quota": 50,
        "allowed_tiers": ["basic", "standard", "professional"],
    },
    "batches": {
        "id": "b1",
        "request_id": "r1",
        "user_id": "u1",
        "tier": "standard",
        "total_items": 3,
        "credits_per_image": 8,
        "base_total": 24,
        "credits_charged": 24,
        "options": {"format": "png"},
    },
    "batch_items": {
        "id": "b1-0",
        "batch_id": "b1",
        "idx": 0,
        "filename": "a.jpg",
        "source": {"bucket": "x", "key": "originals/u1/a.jpg"},
    },
    "integration_settings": {"user_id": "u1", "app": "avatar-creator"},
}


async def insert(conn: Any, table: str, **changes: Any) -> asyncpg.Record | None:
    """Insert VALID[table] with `changes` applied; return the row as stored."""
    values = {**VALID[table], **changes}
    placeholders = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    sql = f"INSERT INTO {table} ({', '.join(values)}) VALUES ({placeholders}) RETURNING *"
    return await conn.fetchrow(sql, *values.values())


@asynccontextmanager
async def violates(constraint: str) -> AsyncIterator[None]:
    with pytest.raises(asyncpg.IntegrityConstraintViolationError) as caught:
        yield
    assert caught.value.constraint_name == constraint


@pytest.fixture
async def conn(db_pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    async with db_pool.acquire() as connection:
        await insert(connection, "credit_accounts")
        await insert(connection, "batches")
        yield connection


async def test_valid_rows_insert_and_jsonb_round_trips(conn: asyncpg.Connection) -> None:
    batch = await conn.fetchrow("SELECT * FROM batches WHERE id = 'b1'")
    assert batch is not None
    assert batch["options"] == {"format": "png"}
    assert batch["status"] == "accepted"
    for table in ("credit_ledger", "subscriptions", "batch_items"):
        assert await insert(conn, table) is not None
    settings = await insert(conn, "integration_settings", output_options={"bg": [1, 2]})
    assert settings is not None
    assert settings["output_options"] == {"bg": [1, 2]}
    assert (settings["enabled"], settings["then_upscale_scale"]) == (False, None)


async def test_balance_never_goes_negative(conn: asyncpg.Connection) -> None:
    async with violates("credit_accounts_balance_check"):
        await conn.execute(
            "UPDATE credit_accounts SET balance = balance - 101 WHERE user_id = 'u1'"
        )
    async with violates("credit_ledger_balance_after_check"):
        await insert(conn, "credit_ledger", balance_after=-1)


async def test_ledger_idempotency_key_is_unique(conn: asyncpg.Connection) -> None:
    await insert(conn, "credit_ledger")
    async with violates("credit_ledger_idempotency_key_key"):
        await insert(conn, "credit_ledger", amount=-3, balance_after=73)


@pytest.mark.parametrize(
    ("changes", "constraint"),
    [
        ({"amount": 0}, "credit_ledger_amount_check"),
        ({"amount": 24}, "credit_ledger_amount_sign"),
        ({"reason": "refund"}, "credit_ledger_amount_sign"),
        ({"reason": "gift"}, "credit_ledger_reason_check"),
        ({"reference_id": None}, "credit_ledger_reference_pair"),
    ],
)
async def test_ledger_rows_are_checked(
    conn: asyncpg.Connection, changes: dict[str, Any], constraint: str
) -> None:
    async with violates(constraint):
        await insert(conn, "credit_ledger", **changes)


@pytest.mark.parametrize(
    ("table", "changes", "constraint"),
    [
        ("batches", {"status": "done"}, "batches_status_check"),
        ("batches", {"tier": "ultra"}, "batches_tier_check"),
        ("batches", {"total_items": 501}, "batches_total_items_check"),
        ("batches", {"total_items": 0}, "batches_total_items_check"),
        ("batches", {"succeeded": 2, "failed": 2}, "batches_counts_within_total"),
        ("batches", {"credits_refunded": 25}, "batches_refund_within_charge"),
        ("batches", {"discount": 25}, "batches_discount_within_base"),
        ("batches", {"options": [1]}, "batches_options_check"),
        ("batch_items", {"status": "queued"}, "batch_items_status_check"),
        ("batch_items", {"status": "done"}, "batch_items_done_has_result"),
        ("batch_items", {"idx": 500}, "batch_items_idx_check"),
        ("batches", {"mode": "single"}, "batches_single_is_one"),
        ("batches", {"mode": "bulk"}, "batches_mode_check"),
        ("batches", {"lane": "express"}, "batches_lane_check"),
        ("batches", {"pricing_type": "subscription"}, "batches_subscription_pricing"),
        ("subscriptions", {"plan": "enterprise"}, "subscriptions_plan_check"),
        ("subscriptions", {"status": "paused"}, "subscriptions_status_check"),
        (
            "subscriptions",
            {"allowed_tiers": ["basic", "gold"]},
            "subscriptions_allowed_tiers_check",
        ),
        ("subscriptions", {"allowed_tiers": []}, "subscriptions_allowed_tiers_check"),
        ("subscriptions", {"daily_quota": 0}, "subscriptions_daily_quota_check"),
        ("subscriptions", {"professional_quota": 201}, "subscriptions_professional_within_daily"),
        ("integration_settings", {"tier": "x"}, "integration_settings_tier_check"),
        ("integration_settings", {"app": "chat"}, "integration_settings_app_check"),
        (
            "integration_settings",
            {"then_upscale_scale": 3},
            "integration_settings_then_upscale_scale_check",
        ),
    ],
)
async def test_bad_values_are_refused(
    conn: asyncpg.Connection, table: str, changes: dict[str, Any], constraint: str
) -> None:
    if table == "batches":
        changes = {"id": "b2", "request_id": "r9", **changes}
    async with violates(constraint):
        await insert(conn, table, **changes)


async def test_refund_cannot_exceed_charge_on_update(conn: asyncpg.Connection) -> None:
    await conn.execute("UPDATE batches SET credits_refunded = 24 WHERE id = 'b1'")
    async with violates("batches_refund_within_charge"):
        await conn.execute("UPDATE batches SET credits_refunded = credits_refunded + 1")


async def test_one_active_subscription_per_user(conn: asyncpg.Connection) -> None:
    first = await insert(conn, "subscriptions")
    assert first is not None
    async with violates("subscriptions_one_active_per_user"):
        await insert(conn, "subscriptions", plan="starter")
    await insert(conn, "subscriptions", status="expired")
    await insert(conn, "subscriptions", user_id="u2")
    await conn.execute("UPDATE subscriptions SET status = 'cancelled' WHERE id = $1", first["id"])
    await insert(conn, "subscriptions", plan="starter")


async def test_duplicate_request_ids_are_refused(conn: asyncpg.Connection) -> None:
    async with violates("batches_request_id_key"):
        await insert(conn, "batches", id="b2")


async def test_single_jobs_is_a_view_of_single_image_batches(conn: asyncpg.Connection) -> None:
    await insert(conn, "batches", id="s1", request_id="r2", mode="single", total_items=1,
                 base_total=8, credits_charged=8)  # fmt: skip
    await insert(conn, "batch_items", id="s1-0", batch_id="s1")
    await insert(conn, "batch_items")  # an item of the ordinary batch b1
    rows = await conn.fetch("SELECT id, status, filename, credits_charged FROM single_jobs")
    assert [tuple(r.values()) for r in rows] == [("s1", "pending", "a.jpg", 8)]


async def test_daily_usage_is_keyed_by_subscription_day_and_tier(conn: asyncpg.Connection) -> None:
    subscription = await insert(conn, "subscriptions")
    assert subscription is not None
    upsert = (
        "INSERT INTO daily_usage (subscription_id, business_date, tier, used)"
        " VALUES ($1, '2025-01-01', $2, 1) ON CONFLICT (subscription_id, business_date, tier)"
        " DO UPDATE SET used = daily_usage.used + 1 RETURNING used"
    )
    assert await conn.fetchval(upsert, subscription["id"], "basic") == 1
    assert await conn.fetchval(upsert, subscription["id"], "basic") == 2
    assert await conn.fetchval(upsert, subscription["id"], "standard") == 1
    async with violates("daily_usage_tier_check"):
        await conn.fetchval(upsert, subscription["id"], "gold")


async def test_items_go_with_their_batch(conn: asyncpg.Connection) -> None:
    await insert(conn, "batch_items")
    async with violates("batch_items_position"):
        await insert(conn, "batch_items", id="b1-dup")
    await conn.execute("DELETE FROM batches WHERE id = 'b1'")
    assert await conn.fetchval("SELECT count(*) FROM batch_items") == 0


async def test_updated_at_follows_updates(conn: asyncpg.Connection) -> None:
    before = await conn.fetchrow("SELECT created_at, updated_at FROM batches WHERE id = 'b1'")
    assert before is not None
    assert before["updated_at"] == before["created_at"]
    after = await conn.fetchrow(
        "UPDATE batches SET status = 'processing' WHERE id = 'b1' RETURNING updated_at"
    )
    assert after is not None
    assert after["updated_at"] > before["updated_at"]
