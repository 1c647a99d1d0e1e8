"""A quote reads the database once, and the pool hands connections back without a reset query."""

from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from lumiku_bgremover import billing
from lumiku_bgremover.contracts.common import Plan, PricingType, RequestMode, Tier
from lumiku_bgremover.contracts.replies import QuoteRequest
from lumiku_bgremover.db.pool import keep_session
from tests.integration.test_billing_quote import JAKARTA, NOW, USER, give, pay, subscribe

pytestmark = pytest.mark.integration

STATEMENTS = ("execute", "executemany", "fetch", "fetchrow", "fetchval")


class Counting:
    """A connection that counts the statements sent through it."""

    def __init__(self, conn: Any) -> None:
        self.conn, self.calls = conn, []

    def __getattr__(self, name: str) -> Any:
        found = getattr(self.conn, name)
        if name not in STATEMENTS:
            return found

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return await found(*args, **kwargs)

        return counted


async def counted_quote(pool: asyncpg.Pool, tier: Tier, mode: RequestMode) -> tuple[Any, list]:
    request = QuoteRequest(user_id=USER, tier=tier, count=1, mode=mode)
    async with pool.acquire() as conn:
        counting = Counting(conn)
        reply = await billing.build_quote(counting, request, now=NOW, tz=JAKARTA)
    return reply, counting.calls


async def test_a_quote_with_subscription_and_usage_is_one_statement(db_pool: asyncpg.Pool) -> None:
    await subscribe(db_pool, Plan.PRO, NOW + timedelta(days=30))
    await give(db_pool, 100)
    await pay(db_pool, "k1", Tier.BASIC)
    await pay(db_pool, "k2", Tier.STANDARD)
    reply, calls = await counted_quote(db_pool, Tier.BASIC, RequestMode.SINGLE)
    assert calls == ["fetchrow"]
    assert (reply.pricing_type, reply.quota_used, reply.quota_left) == (
        PricingType.SUBSCRIPTION,
        2,
        198,
    )
    assert reply.balance == 100


async def test_a_quote_without_subscription_or_account_is_one_statement(
    db_pool: asyncpg.Pool,
) -> None:
    reply, calls = await counted_quote(db_pool, Tier.BASIC, RequestMode.SINGLE)
    assert calls == ["fetchrow"]
    assert (reply.balance, reply.quota_used, reply.pricing_type) == (0, None, PricingType.CREDITS)


async def test_the_pool_reset_sends_nothing() -> None:
    class Silent:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"reset touched the connection: {name}")

    await keep_session(Silent())  # type: ignore[arg-type]


async def test_a_released_connection_is_not_left_in_a_transaction(db_pool: asyncpg.Pool) -> None:
    async def abandon(conn: Any) -> None:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(42)")
            raise RuntimeError

    for _ in range(6):  # more uses than the pool has connections: each is reused
        async with db_pool.acquire() as conn:
            with pytest.raises(RuntimeError):
                await abandon(conn)
            assert not conn.is_in_transaction()
    async with db_pool.acquire() as conn:
        held = await conn.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
    assert held == 0
