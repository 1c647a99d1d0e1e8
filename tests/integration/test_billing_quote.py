"""`build_quote` on a real PostgreSQL: spec prices, the user's balance and quota."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import msgspec
import pytest

from lumiku_bgremover import billing
from lumiku_bgremover.billing import Reference, SinglePayment
from lumiku_bgremover.contracts.codes import RejectCode
from lumiku_bgremover.contracts.common import Plan, PricingType, RequestMode, Tier
from lumiku_bgremover.contracts.replies import QuoteReply, QuoteRequest
from lumiku_bgremover.pricing import InvalidCount

pytestmark = pytest.mark.integration

JAKARTA = ZoneInfo("Asia/Jakarta")
USER = "usr_8Kq2mZ4p"
NOW = datetime(2025, 3, 10, 10, 0, tzinfo=JAKARTA)
EXAMPLES = Path(__file__).parents[2] / "contracts" / "examples"


async def quote(
    pool: asyncpg.Pool,
    tier: Tier,
    count: int,
    mode: RequestMode = RequestMode.BATCH,
    *,
    now: datetime = NOW,
    max_images: int = 500,
) -> QuoteReply:
    request = QuoteRequest(user_id=USER, tier=tier, count=count, mode=mode)
    async with pool.acquire() as conn:
        return await billing.build_quote(conn, request, now=now, tz=JAKARTA, max_images=max_images)


async def give(pool: asyncpg.Pool, amount: int) -> None:
    async with pool.acquire() as conn:
        await billing.grant(conn, USER, amount, idempotency_key=f"g{amount}")


async def subscribe(pool: asyncpg.Pool, plan: Plan, expires_at: datetime) -> None:
    async with pool.acquire() as conn:
        await billing.set_subscription(
            conn, USER, plan, expires_at=expires_at, started_at=NOW - timedelta(days=1)
        )


async def pay(pool: asyncpg.Pool, key: str, tier: Tier = Tier.BASIC) -> SinglePayment:
    async with pool.acquire() as conn:
        paid = await billing.pay_single(
            conn,
            USER,
            tier,
            now=NOW,
            tz=JAKARTA,
            idempotency_key=key,
            reference=Reference("single", key),
        )
    assert isinstance(paid, SinglePayment)
    return paid


async def test_the_contract_example_is_what_we_answer(db_pool: asyncpg.Pool) -> None:
    await give(db_pool, 1200)
    example = json.loads((EXAMPLES / "QuoteReply.json").read_text())
    reply = await quote(db_pool, Tier.STANDARD, 50)
    assert json.loads(msgspec.json.encode(reply)) == example


@pytest.mark.parametrize(
    ("tier", "count", "expected"),
    [
        (Tier.STANDARD, 19, (152, 0, 0, 152, "8")),
        (Tier.STANDARD, 20, (160, 5, 8, 152, "7.6")),
        (Tier.STANDARD, 50, (400, 5, 20, 380, "7.6")),
        (Tier.BASIC, 300, (900, 20, 180, 720, "2.4")),
        (Tier.INDUSTRY, 1, (25, 0, 0, 25, "25")),
    ],
)
async def test_batch_quotes_follow_the_spec(
    db_pool: asyncpg.Pool, tier: Tier, count: int, expected: tuple[int, int, int, int, str]
) -> None:
    """(base_total, discount_pct, discount, total, per_image) as in the spec's examples."""
    await give(db_pool, 1000)
    reply = await quote(db_pool, tier, count)
    got = (reply.base_total, reply.discount_pct, reply.discount, reply.total, reply.per_image)
    assert got == expected
    assert (reply.pricing_type, reply.balance, reply.count) == (PricingType.CREDITS, 1000, count)
    assert (reply.sufficient, reply.accepted, reply.reason) == (True, True, None)
    assert (reply.quota_used, reply.quota_left) == (None, None)


async def test_insufficient_balance_is_reported_not_raised(db_pool: asyncpg.Pool) -> None:
    await give(db_pool, 379)
    reply = await quote(db_pool, Tier.STANDARD, 50)
    assert (reply.total, reply.balance) == (380, 379)
    assert (reply.sufficient, reply.accepted, reply.reason) == (
        False,
        False,
        RejectCode.INSUFFICIENT_CREDITS,
    )
    await give(db_pool, 1)
    assert (await quote(db_pool, Tier.STANDARD, 50)).accepted


async def test_unknown_user_has_zero_balance(db_pool: asyncpg.Pool) -> None:
    reply = await quote(db_pool, Tier.BASIC, 1, RequestMode.SINGLE)
    assert (reply.balance, reply.total, reply.pricing_type) == (0, 3, PricingType.CREDITS)
    assert reply.reason is RejectCode.INSUFFICIENT_CREDITS


async def test_industry_single_costs_25_even_on_pro(db_pool: asyncpg.Pool) -> None:
    await subscribe(db_pool, Plan.PRO, NOW + timedelta(days=30))
    await give(db_pool, 25)
    reply = await quote(db_pool, Tier.INDUSTRY, 1, RequestMode.SINGLE)
    assert (reply.pricing_type, reply.credits_per_image, reply.total) == (
        PricingType.CREDITS,
        25,
        25,
    )
    assert (reply.per_image, reply.accepted, reply.quota_used) == ("25", True, 0)


async def test_starter_single_uses_the_subscription_until_quota_runs_out(
    db_pool: asyncpg.Pool,
) -> None:
    await subscribe(db_pool, Plan.STARTER, NOW + timedelta(days=30))
    first = await quote(db_pool, Tier.BASIC, 1, RequestMode.SINGLE)
    assert (first.pricing_type, first.total, first.per_image) == (PricingType.SUBSCRIPTION, 0, "0")
    assert (first.quota_used, first.quota_left) == (0, 50)
    assert (first.balance, first.sufficient, first.accepted) == (0, True, True)
    await pay(db_pool, "s0")
    second = await quote(db_pool, Tier.BASIC, 1, RequestMode.SINGLE)
    assert (second.pricing_type, second.quota_used, second.quota_left) == (
        PricingType.SUBSCRIPTION,
        1,
        49,
    )
    for i in range(1, 50):
        await pay(db_pool, f"s{i}")
    at_quota = await quote(db_pool, Tier.BASIC, 1, RequestMode.SINGLE)
    assert (at_quota.pricing_type, at_quota.total, at_quota.quota_left) == (
        PricingType.CREDITS,
        3,
        0,
    )
    assert at_quota.reason is RejectCode.INSUFFICIENT_CREDITS  # balance 0
    await give(db_pool, 3)
    assert (await quote(db_pool, Tier.BASIC, 1, RequestMode.SINGLE)).accepted


async def test_pro_professional_quota_left_is_the_professional_remainder(
    db_pool: asyncpg.Pool,
) -> None:
    await subscribe(db_pool, Plan.PRO, NOW + timedelta(days=30))
    await pay(db_pool, "p1", Tier.PROFESSIONAL)
    await pay(db_pool, "b1", Tier.BASIC)
    pro = await quote(db_pool, Tier.PROFESSIONAL, 1, RequestMode.SINGLE)
    basic = await quote(db_pool, Tier.BASIC, 1, RequestMode.SINGLE)
    assert (pro.quota_used, pro.quota_left) == (2, 49)
    assert (basic.quota_used, basic.quota_left) == (2, 198)


async def test_a_batch_is_paid_in_credits_even_with_a_subscription(db_pool: asyncpg.Pool) -> None:
    await subscribe(db_pool, Plan.STARTER, NOW + timedelta(days=30))
    reply = await quote(db_pool, Tier.BASIC, 2)
    assert (reply.pricing_type, reply.total, reply.quota_left) == (PricingType.CREDITS, 6, 50)
    assert reply.reason is RejectCode.INSUFFICIENT_CREDITS


async def test_an_expired_subscription_quotes_credits_without_quota(
    db_pool: asyncpg.Pool,
) -> None:
    await subscribe(db_pool, Plan.STARTER, NOW)
    reply = await quote(db_pool, Tier.BASIC, 1, RequestMode.SINGLE)
    assert (reply.pricing_type, reply.total) == (PricingType.CREDITS, 3)
    assert (reply.quota_used, reply.quota_left) == (None, None)


async def test_the_quota_day_follows_the_business_time_zone(db_pool: asyncpg.Pool) -> None:
    await subscribe(db_pool, Plan.STARTER, NOW + timedelta(days=30))
    await pay(db_pool, "s0")  # 10:00 Jakarta on the 10th
    next_day = datetime(2025, 3, 11, 0, 1, tzinfo=JAKARTA)
    assert next_day.astimezone(UTC).date() == NOW.date()
    reply = await quote(db_pool, Tier.BASIC, 1, RequestMode.SINGLE, now=next_day)
    assert (reply.quota_used, reply.quota_left) == (0, 50)


@pytest.mark.parametrize(
    ("count", "mode", "max_images"),
    [
        (0, RequestMode.BATCH, 500),
        (11, RequestMode.BATCH, 10),
        (501, RequestMode.BATCH, 500),
        (2, RequestMode.SINGLE, 500),
    ],
)
async def test_invalid_counts_raise(
    db_pool: asyncpg.Pool, count: int, mode: RequestMode, max_images: int
) -> None:
    with pytest.raises(InvalidCount):
        await quote(db_pool, Tier.BASIC, count, mode, max_images=max_images)


async def test_quoting_writes_nothing(db_pool: asyncpg.Pool) -> None:
    await subscribe(db_pool, Plan.STARTER, NOW + timedelta(days=30))
    for _ in range(3):
        await quote(db_pool, Tier.BASIC, 1, RequestMode.SINGLE)
        await quote(db_pool, Tier.BASIC, 10)
    assert await db_pool.fetchval("SELECT count(*) FROM daily_usage") == 0
    assert await db_pool.fetchval("SELECT count(*) FROM credit_ledger") == 0
    assert await db_pool.fetchval("SELECT count(*) FROM credit_accounts") == 0
