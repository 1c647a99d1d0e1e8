"""The credit ledger on a real PostgreSQL: exactly-once charges, capped refunds, no overdraft."""

import asyncio
import logging
import time

import asyncpg
import pytest

from lumiku_bgremover import billing
from lumiku_bgremover.billing import (
    IdempotencyConflict,
    InsufficientCredits,
    LedgerEntry,
    Reference,
)

pytestmark = pytest.mark.integration
log = logging.getLogger(__name__)

USER = "usr_ledger"
BATCH = Reference("batch", "b_1")


@pytest.fixture
def pool(wide_pool: asyncpg.Pool) -> asyncpg.Pool:
    return wide_pool


async def count_rows(pool: asyncpg.Pool, user_id: str = USER) -> int:
    return await pool.fetchval("SELECT count(*) FROM credit_ledger WHERE user_id = $1", user_id)


async def balance_of(pool: asyncpg.Pool, user_id: str = USER) -> int:
    async with pool.acquire() as conn:
        return await billing.balance(conn, user_id)


async def refundable(pool: asyncpg.Pool, reference: Reference) -> int:
    async with pool.acquire() as conn:
        return await billing.refundable(conn, USER, reference)


async def assert_ledger_consistent(pool: asyncpg.Pool, user_id: str = USER) -> None:
    """Amounts sum to the balance, and each balance_after follows from the one before."""
    rows = await pool.fetch(
        "SELECT amount, balance_after FROM credit_ledger WHERE user_id = $1 ORDER BY id", user_id
    )
    running = 0
    for row in rows:
        running += row["amount"]
        assert row["balance_after"] == running
    assert running == await balance_of(pool, user_id)


async def charge(
    pool: asyncpg.Pool, amount: int, key: str, *, user_id: str = USER, reference: Reference = BATCH
) -> LedgerEntry | InsufficientCredits:
    async with pool.acquire() as conn:
        return await billing.charge(
            conn,
            user_id,
            amount,
            idempotency_key=key,
            reason="batch_charge",
            reference=reference,
        )


async def refund(
    pool: asyncpg.Pool, amount: int, key: str, *, user_id: str = USER, reference: Reference = BATCH
) -> LedgerEntry | None:
    async with pool.acquire() as conn:
        return await billing.refund(conn, user_id, amount, idempotency_key=key, reference=reference)


async def grant(pool: asyncpg.Pool, amount: int, key: str = "g1", user_id: str = USER) -> None:
    async with pool.acquire() as conn:
        await billing.grant(conn, user_id, amount, idempotency_key=key)


# Balances and grants ----------------------------------------------------------------------


async def test_unknown_user_has_zero_balance_and_no_entries(db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as conn:
        assert await billing.balance(conn, "nobody") == 0
        assert await billing.ledger_entries(conn, "nobody") == []


async def test_grant_credits_the_account_and_writes_one_entry(db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as conn:
        first = await billing.grant(conn, USER, 100, idempotency_key="g1")
        second = await billing.grant(
            conn, USER, 50, idempotency_key="p1", reason="purchase", reference=Reference("x", "1")
        )
        assert (first.amount, first.balance_after, first.reason) == (100, 100, "grant")
        assert (first.replayed, first.reference, first.user_id) == (False, None, USER)
        assert (second.balance_after, second.reason, second.reference) == (
            150,
            "purchase",
            Reference("x", "1"),
        )
        assert first.created_at.tzinfo is not None
        assert await billing.balance(conn, USER) == 150
        entries = await billing.ledger_entries(conn, USER)
    assert [e.idempotency_key for e in entries] == ["p1", "g1"]  # newest first
    assert [e.id for e in entries] == [second.id, first.id]


async def test_ledger_entries_respects_the_limit(db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as conn:
        for i in range(5):
            await billing.grant(conn, USER, 1, idempotency_key=f"g{i}")
        entries = await billing.ledger_entries(conn, USER, limit=2)
    assert [e.idempotency_key for e in entries] == ["g4", "g3"]


async def test_grant_replay_returns_the_first_entry(db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as conn:
        first = await billing.grant(conn, USER, 100, idempotency_key="g1")
        again = await billing.grant(conn, USER, 100, idempotency_key="g1")
        assert again.replayed
        assert (again.id, again.amount, again.balance_after) == (first.id, 100, 100)
        assert await billing.balance(conn, USER) == 100


@pytest.mark.parametrize(
    ("user_id", "amount", "reason"),
    [("other_user", 100, "grant"), (USER, 99, "grant"), (USER, 100, "purchase")],
)
async def test_grant_key_reused_differently_is_a_conflict(
    db_pool: asyncpg.Pool, user_id: str, amount: int, reason: str
) -> None:
    async with db_pool.acquire() as conn:
        await billing.grant(conn, USER, 100, idempotency_key="g1")
        with pytest.raises(IdempotencyConflict, match="g1"):
            await billing.grant(conn, user_id, amount, idempotency_key="g1", reason=reason)
        assert await billing.balance(conn, USER) == 100
        assert await billing.balance(conn, "other_user") == 0


@pytest.mark.parametrize(
    ("amount", "reason", "key"),
    [
        (0, "grant", "k"),
        (-5, "grant", "k"),
        (5, "refund", "k"),
        (5, "batch_charge", "k"),
        (5, "grant", ""),
    ],
)
async def test_grant_refuses_bad_arguments(
    db_pool: asyncpg.Pool, amount: int, reason: str, key: str
) -> None:
    async with db_pool.acquire() as conn:
        with pytest.raises(ValueError):
            await billing.grant(conn, USER, amount, idempotency_key=key, reason=reason)
        assert await count_rows(db_pool) == 0


async def test_negative_adjustment_never_overdraws(db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as conn:
        await billing.grant(conn, USER, 10, idempotency_key="g1")
        refused = await billing.adjust(conn, USER, -11, idempotency_key="a1")
        assert refused == InsufficientCredits(USER, balance=10, required=11)
        taken = await billing.adjust(conn, USER, -10, idempotency_key="a2")
        assert isinstance(taken, LedgerEntry)
        assert (taken.amount, taken.balance_after, taken.reason) == (-10, 0, "adjustment")
        given = await billing.adjust(conn, USER, 4, idempotency_key="a3")
        assert isinstance(given, LedgerEntry)
        assert given.balance_after == 4
    assert await count_rows(db_pool) == 3
    await assert_ledger_consistent(db_pool)


# Charges -----------------------------------------------------------------------------------


async def test_charge_takes_credits_and_records_the_reference(db_pool: asyncpg.Pool) -> None:
    await grant(db_pool, 100)
    entry = await charge(db_pool, 30, "c1")
    assert isinstance(entry, LedgerEntry)
    assert (entry.amount, entry.balance_after, entry.reason, entry.reference) == (
        -30,
        70,
        "batch_charge",
        BATCH,
    )
    assert not entry.replayed
    assert await balance_of(db_pool) == 70
    await assert_ledger_consistent(db_pool)


async def test_insufficient_charge_is_a_result_and_writes_nothing(db_pool: asyncpg.Pool) -> None:
    await grant(db_pool, 29)
    result = await charge(db_pool, 30, "c1")
    assert result == InsufficientCredits(USER, balance=29, required=30)
    assert await balance_of(db_pool) == 29
    assert await count_rows(db_pool) == 1
    unknown = await charge(db_pool, 1, "c2", user_id="stranger")
    assert unknown == InsufficientCredits("stranger", balance=0, required=1)
    assert await count_rows(db_pool, "stranger") == 0


async def test_charge_exactly_the_balance_leaves_zero(db_pool: asyncpg.Pool) -> None:
    await grant(db_pool, 30)
    entry = await charge(db_pool, 30, "c1")
    assert isinstance(entry, LedgerEntry)
    assert entry.balance_after == 0


async def test_200_concurrent_charges_never_overdraw(pool: asyncpg.Pool) -> None:
    await grant(pool, 1000)
    started = time.perf_counter()
    results = await asyncio.gather(*(charge(pool, 10, f"c{i}") for i in range(200)))
    elapsed = time.perf_counter() - started
    log.info("200 concurrent charges on 20 connections took %.3f s", elapsed)
    accepted = [r for r in results if isinstance(r, LedgerEntry)]
    refused = [r for r in results if isinstance(r, InsufficientCredits)]
    assert (len(accepted), len(refused)) == (100, 100)
    assert all(not r.replayed for r in accepted)
    assert sorted(e.balance_after for e in accepted) == list(range(0, 1000, 10))
    assert await balance_of(pool) == 0
    assert await count_rows(pool) == 101
    await assert_ledger_consistent(pool)


async def test_charge_replayed_sequentially_charges_once(db_pool: asyncpg.Pool) -> None:
    await grant(db_pool, 100)
    results = [await charge(db_pool, 10, "c1") for _ in range(5)]
    entries = [r for r in results if isinstance(r, LedgerEntry)]
    assert len(entries) == 5
    assert [e.replayed for e in entries] == [False, True, True, True, True]
    assert {e.id for e in entries} == {entries[0].id}
    assert {e.balance_after for e in entries} == {90}
    assert await balance_of(db_pool) == 90
    assert await count_rows(db_pool) == 2


async def test_replay_of_a_charge_that_spent_everything_is_not_refused(
    db_pool: asyncpg.Pool,
) -> None:
    await grant(db_pool, 10)
    first = await charge(db_pool, 10, "c1")
    again = await charge(db_pool, 10, "c1")
    assert isinstance(first, LedgerEntry)
    assert isinstance(again, LedgerEntry)
    assert (again.id, again.replayed) == (first.id, True)
    assert await balance_of(db_pool) == 0


async def test_charge_replayed_concurrently_charges_once(pool: asyncpg.Pool) -> None:
    await grant(pool, 100)
    results = await asyncio.gather(*(charge(pool, 10, "c1") for _ in range(5)))
    entries = [r for r in results if isinstance(r, LedgerEntry)]
    assert len(entries) == 5
    assert sorted(e.replayed for e in entries) == [False, True, True, True, True]
    assert len({e.id for e in entries}) == 1
    assert await balance_of(pool) == 90
    await assert_ledger_consistent(pool)


async def test_concurrent_replays_of_the_last_affordable_charge_are_not_refused(
    pool: asyncpg.Pool,
) -> None:
    """Twins that waited on the first one find the balance spent by their own key: replay."""
    await grant(pool, 10)
    results = await asyncio.gather(*(charge(pool, 10, "c1") for _ in range(8)))
    assert all(isinstance(r, LedgerEntry) for r in results), results
    assert await balance_of(pool) == 0
    assert await count_rows(pool) == 2


@pytest.mark.parametrize(
    ("user_id", "amount", "reference"),
    [("other_user", 10, BATCH), (USER, 11, BATCH), (USER, 10, Reference("batch", "b_2"))],
)
async def test_charge_key_reused_differently_is_a_conflict(
    db_pool: asyncpg.Pool, user_id: str, amount: int, reference: Reference
) -> None:
    await grant(db_pool, 100)
    await grant(db_pool, 100, "g2", user_id="other_user")
    await charge(db_pool, 10, "c1")
    with pytest.raises(IdempotencyConflict):
        await charge(db_pool, amount, "c1", user_id=user_id, reference=reference)
    assert await balance_of(db_pool) == 90
    assert await balance_of(db_pool, "other_user") == 100


async def test_charge_key_reused_for_another_reason_is_a_conflict(db_pool: asyncpg.Pool) -> None:
    await grant(db_pool, 100)
    async with db_pool.acquire() as conn:
        with pytest.raises(IdempotencyConflict):
            await billing.charge(
                conn, USER, 100, idempotency_key="g1", reason="batch_charge", reference=BATCH
            )
        await charge(db_pool, 10, "c1")
        with pytest.raises(IdempotencyConflict):
            await billing.charge(
                conn, USER, 10, idempotency_key="c1", reason="single_charge", reference=BATCH
            )


async def charge_then_fail(conn: asyncpg.Connection) -> None:
    async with conn.transaction():
        entry = await billing.charge(
            conn, USER, 40, idempotency_key="c1", reason="batch_charge", reference=BATCH
        )
        assert isinstance(entry, LedgerEntry)
        raise RuntimeError("intake failed")


async def test_charge_inside_the_callers_transaction_rolls_back_with_it(
    db_pool: asyncpg.Pool,
) -> None:
    await grant(db_pool, 100)
    async with db_pool.acquire() as conn:
        with pytest.raises(RuntimeError, match="intake failed"):
            await charge_then_fail(conn)
        assert await billing.balance(conn, USER) == 100
        async with conn.transaction():  # a refusal leaves the caller's transaction usable
            refused = await billing.charge(
                conn, USER, 500, idempotency_key="c2", reason="batch_charge", reference=BATCH
            )
            assert isinstance(refused, InsufficientCredits)
            again = await billing.charge(
                conn, USER, 40, idempotency_key="c1", reason="batch_charge", reference=BATCH
            )
            assert isinstance(again, LedgerEntry)
            assert not again.replayed
    assert await balance_of(db_pool) == 60


# Refunds -----------------------------------------------------------------------------------


async def test_refunds_are_capped_at_the_charge(db_pool: asyncpg.Pool) -> None:
    await grant(db_pool, 100)
    await charge(db_pool, 50, "c1")
    first = await refund(db_pool, 30, "r1")
    second = await refund(db_pool, 30, "r2")
    third = await refund(db_pool, 30, "r3")
    assert isinstance(first, LedgerEntry)
    assert isinstance(second, LedgerEntry)
    assert (first.amount, second.amount, third) == (30, 20, None)
    assert (first.reason, first.reference) == ("refund", BATCH)
    assert await balance_of(db_pool) == 100
    assert await refundable(db_pool, BATCH) == 0
    await assert_ledger_consistent(db_pool)


async def test_refund_replays_refund_once(db_pool: asyncpg.Pool) -> None:
    await grant(db_pool, 100)
    await charge(db_pool, 50, "c1")
    await refund(db_pool, 30, "r1")
    capped = await refund(db_pool, 30, "r2")
    replays = [await refund(db_pool, 30, "r2") for _ in range(3)]
    assert isinstance(capped, LedgerEntry)
    assert capped.amount == 20
    assert all(isinstance(r, LedgerEntry) and r.replayed for r in replays)
    assert {r.id for r in replays if r is not None} == {capped.id}
    assert await balance_of(db_pool) == 100
    assert await count_rows(db_pool) == 4


async def test_concurrent_refund_replays_refund_once(pool: asyncpg.Pool) -> None:
    await grant(pool, 100)
    await charge(pool, 50, "c1")
    results = await asyncio.gather(*(refund(pool, 10, "r1") for _ in range(6)))
    assert sorted(r.replayed for r in results if r is not None) == [False] + [True] * 5
    assert await balance_of(pool) == 60


async def test_20_concurrent_refunds_never_exceed_the_charge(pool: asyncpg.Pool) -> None:
    await grant(pool, 100)
    await charge(pool, 50, "c1")
    results = await asyncio.gather(*(refund(pool, 7, f"r{i}") for i in range(20)))
    refunded = [r.amount for r in results if r is not None]
    assert sum(refunded) == 50
    assert sorted(refunded) == [1, 7, 7, 7, 7, 7, 7, 7]
    assert await balance_of(pool) == 100
    await assert_ledger_consistent(pool)


async def test_refunds_are_per_reference_and_per_user(db_pool: asyncpg.Pool) -> None:
    await grant(db_pool, 100)
    await grant(db_pool, 100, "g2", user_id="other_user")
    await charge(db_pool, 20, "c1")
    await charge(db_pool, 30, "c2", reference=Reference("batch", "b_2"))
    assert await refund(db_pool, 5, "r0", reference=Reference("batch", "nope")) is None
    assert await refund(db_pool, 5, "r1", user_id="other_user") is None
    assert await refund(db_pool, 5, "r2", user_id="stranger") is None
    entry = await refund(db_pool, 100, "r3")
    assert entry is not None
    assert entry.amount == 20
    assert await refundable(db_pool, Reference("batch", "b_2")) == 30


async def test_refund_key_reused_for_a_charge_is_a_conflict(db_pool: asyncpg.Pool) -> None:
    await grant(db_pool, 100)
    await charge(db_pool, 20, "c1")
    with pytest.raises(IdempotencyConflict):
        await refund(db_pool, 20, "c1")
    await refund(db_pool, 10, "r1")
    with pytest.raises(IdempotencyConflict):
        await refund(db_pool, 10, "r1", reference=Reference("batch", "b_2"))
    with pytest.raises(IdempotencyConflict):  # a replay never asks for less than it got
        await refund(db_pool, 5, "r1")
    assert await balance_of(db_pool) == 90
