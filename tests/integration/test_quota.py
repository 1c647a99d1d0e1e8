"""Subscriptions, daily quotas and single-image payment on a real PostgreSQL."""

import asyncio
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from lumiku_bgremover import billing
from lumiku_bgremover.billing import (
    IdempotencyConflict,
    InsufficientCredits,
    NotCovered,
    QuotaUse,
    Reference,
    SinglePayment,
)
from lumiku_bgremover.contracts.common import Plan, PricingType, Tier
from lumiku_bgremover.pricing import CoverageReason, SubscriptionStatus

pytestmark = pytest.mark.integration

JAKARTA = ZoneInfo("Asia/Jakarta")
USER = "usr_quota"
#: 10:00 in Jakarta (UTC+7) on 2025-03-10.
NOW = datetime(2025, 3, 10, 10, 0, tzinfo=JAKARTA)
START = datetime(2025, 3, 1, tzinfo=UTC)
END = datetime(2025, 4, 1, tzinfo=UTC)


@pytest.fixture
def pool(wide_pool: asyncpg.Pool) -> asyncpg.Pool:
    return wide_pool


async def subscribe(pool: asyncpg.Pool, plan: Plan, *, expires_at: datetime = END) -> None:
    async with pool.acquire() as conn:
        await billing.set_subscription(conn, USER, plan, expires_at=expires_at, started_at=START)


async def give(pool: asyncpg.Pool, amount: int) -> None:
    async with pool.acquire() as conn:
        await billing.grant(conn, USER, amount, idempotency_key=f"grant-{amount}")


async def consume(
    pool: asyncpg.Pool, key: str, tier: Tier = Tier.BASIC, now: datetime = NOW
) -> QuotaUse | NotCovered:
    async with pool.acquire() as conn:
        return await billing.consume_quota(
            conn, USER, tier, now=now, tz=JAKARTA, idempotency_key=key
        )


async def pay(
    pool: asyncpg.Pool, key: str, tier: Tier = Tier.BASIC, now: datetime = NOW
) -> SinglePayment | InsufficientCredits:
    async with pool.acquire() as conn:
        return await billing.pay_single(
            conn,
            USER,
            tier,
            now=now,
            tz=JAKARTA,
            idempotency_key=key,
            reference=Reference("single", key),
        )


async def release(pool: asyncpg.Pool, key: str) -> bool:
    async with pool.acquire() as conn:
        return await billing.release_quota(conn, idempotency_key=key)


TODAY = NOW.date()


async def usage(pool: asyncpg.Pool, day: date = TODAY) -> dict[str, int]:
    rows = await pool.fetch(
        "SELECT tier, used FROM daily_usage WHERE business_date = $1 AND used > 0", day
    )
    return {row["tier"]: row["used"] for row in rows}


async def balance_of(pool: asyncpg.Pool) -> int:
    async with pool.acquire() as conn:
        return await billing.balance(conn, USER)


async def fill(pool: asyncpg.Pool, tier: str, used: int, day: date = TODAY) -> None:
    """Set today's usage directly (a user who already used `used` removals of `tier`)."""
    await pool.execute(
        "INSERT INTO daily_usage (subscription_id, business_date, tier, used)"
        " SELECT id, $2, $3, $4 FROM subscriptions WHERE user_id = $1 AND status = 'active'",
        USER,
        day,
        tier,
        used,
    )


# Subscriptions -----------------------------------------------------------------------------


async def test_set_subscription_copies_the_plan(db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as conn:
        sub = await billing.set_subscription(conn, USER, Plan.PRO, expires_at=END, started_at=START)
        assert (sub.plan, sub.status, sub.user_id) == (Plan.PRO, SubscriptionStatus.ACTIVE, USER)
        assert (sub.daily_quota, sub.professional_quota) == (200, 50)
        assert sub.allowed_tiers == {Tier.BASIC, Tier.STANDARD, Tier.PROFESSIONAL}
        assert (sub.started_at, sub.expires_at) == (START, END)
        assert await billing.active_subscription(conn, USER, NOW) == sub


async def test_set_subscription_replaces_the_active_one(db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as conn:
        old = await billing.set_subscription(conn, USER, Plan.PRO, expires_at=END, started_at=START)
        new = await billing.set_subscription(
            conn, USER, Plan.STARTER, expires_at=END, started_at=START
        )
        assert (new.daily_quota, new.professional_quota) == (50, None)
        assert new.allowed_tiers == {Tier.BASIC, Tier.STANDARD}
        assert await billing.active_subscription(conn, USER, NOW) == new
        status = await conn.fetchval("SELECT status FROM subscriptions WHERE id = $1", old.id)
    assert status == "cancelled"


async def test_concurrent_set_subscription_leaves_one_active(pool: asyncpg.Pool) -> None:
    await asyncio.gather(*(subscribe(pool, Plan.STARTER) for _ in range(10)))
    rows = await pool.fetch("SELECT status FROM subscriptions WHERE user_id = $1", USER)
    assert sorted(r["status"] for r in rows) == ["active"] + ["cancelled"] * 9


async def test_cancel_and_expiry_end_the_subscription(db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as conn:
        assert await billing.cancel_subscription(conn, USER) is None
        sub = await billing.set_subscription(
            conn, USER, Plan.STARTER, expires_at=END, started_at=START
        )
        assert await billing.active_subscription(conn, USER, END - timedelta(seconds=1)) == sub
        assert await billing.active_subscription(conn, USER, END) is None
        cancelled = await billing.cancel_subscription(conn, USER)
        assert cancelled is not None
        assert (cancelled.id, cancelled.status) == (sub.id, SubscriptionStatus.CANCELLED)
        assert await billing.active_subscription(conn, USER, NOW) is None
        assert await billing.subscription_snapshot(conn, USER, NOW, JAKARTA) is None


async def test_set_subscription_refuses_a_bad_period(db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as conn:
        with pytest.raises(ValueError, match="after"):
            await billing.set_subscription(
                conn, USER, Plan.STARTER, expires_at=START, started_at=END
            )
        with pytest.raises(ValueError, match="not after the start"):  # started: the db's now()
            await billing.set_subscription(conn, USER, Plan.STARTER, expires_at=END)
        with pytest.raises(ValueError, match="aware"):
            await billing.set_subscription(
                conn,
                USER,
                Plan.STARTER,
                expires_at=datetime(2030, 1, 1),  # noqa: DTZ001
            )


async def test_snapshot_has_todays_usage_per_tier(db_pool: asyncpg.Pool) -> None:
    await subscribe(db_pool, Plan.PRO)
    await consume(db_pool, "k1", Tier.BASIC)
    await consume(db_pool, "k2", Tier.PROFESSIONAL)
    await consume(db_pool, "k3", Tier.PROFESSIONAL)
    await consume(db_pool, "k4", Tier.BASIC, now=NOW - timedelta(days=1))
    async with db_pool.acquire() as conn:
        snap = await billing.subscription_snapshot(conn, USER, NOW, JAKARTA)
    assert snap is not None
    assert (snap.plan, snap.daily_quota, snap.professional_quota) == (Plan.PRO, 200, 50)
    assert snap.used_today_total == 3
    assert dict(snap.used_today_by_tier) == {Tier.BASIC: 1, Tier.PROFESSIONAL: 2}


# Quota ------------------------------------------------------------------------------------


async def test_quota_counts_all_tiers_together(db_pool: asyncpg.Pool) -> None:
    await subscribe(db_pool, Plan.STARTER)
    results = [
        await consume(db_pool, f"k{i}", Tier.BASIC if i % 2 else Tier.STANDARD) for i in range(50)
    ]
    assert all(isinstance(r, QuotaUse) for r in results)
    last = results[-1]
    assert isinstance(last, QuotaUse)
    assert (last.used_today, last.left_today, last.business_date) == (50, 0, NOW.date())
    assert await consume(db_pool, "k50", Tier.BASIC) == NotCovered(CoverageReason.QUOTA_EXHAUSTED)
    assert await usage(db_pool) == {"basic": 25, "standard": 25}


async def test_consume_reports_what_is_left(db_pool: asyncpg.Pool) -> None:
    await subscribe(db_pool, Plan.PRO)
    await fill(db_pool, "basic", 10)
    use = await consume(db_pool, "k1", Tier.PROFESSIONAL)
    assert isinstance(use, QuotaUse)
    assert (use.tier, use.used_today, use.left_today, use.replayed) == (
        Tier.PROFESSIONAL,
        11,
        49,
        False,
    )


async def test_pro_caps_professional_but_still_covers_basic(db_pool: asyncpg.Pool) -> None:
    await subscribe(db_pool, Plan.PRO)
    await give(db_pool, 1000)
    paid = [await pay(db_pool, f"p{i}", Tier.PROFESSIONAL) for i in range(51)]
    kinds = [p.pricing_type for p in paid if isinstance(p, SinglePayment)]
    assert kinds == [PricingType.SUBSCRIPTION] * 50 + [PricingType.CREDITS]
    assert isinstance(paid[-1], SinglePayment)
    assert paid[-1].credits_charged == 15
    assert await consume(db_pool, "p51", Tier.PROFESSIONAL) == NotCovered(
        CoverageReason.PROFESSIONAL_QUOTA_EXHAUSTED
    )
    basic = await pay(db_pool, "b1", Tier.BASIC)
    assert isinstance(basic, SinglePayment)
    assert (basic.pricing_type, basic.credits_charged) == (PricingType.SUBSCRIPTION, 0)
    assert await usage(db_pool) == {"professional": 50, "basic": 1}
    assert await balance_of(db_pool) == 1000 - 15


async def test_pro_daily_quota_counts_professional_too(db_pool: asyncpg.Pool) -> None:
    await subscribe(db_pool, Plan.PRO)
    await fill(db_pool, "basic", 150)
    for i in range(50):
        assert isinstance(await consume(db_pool, f"p{i}", Tier.PROFESSIONAL), QuotaUse)
    assert await consume(db_pool, "b", Tier.STANDARD) == NotCovered(CoverageReason.QUOTA_EXHAUSTED)


async def test_industry_is_never_covered(db_pool: asyncpg.Pool) -> None:
    await subscribe(db_pool, Plan.PRO)
    await give(db_pool, 100)
    assert await consume(db_pool, "k1", Tier.INDUSTRY) == NotCovered(
        CoverageReason.TIER_NOT_COVERED
    )
    paid = await pay(db_pool, "k2", Tier.INDUSTRY)
    assert isinstance(paid, SinglePayment)
    assert (paid.pricing_type, paid.credits_charged, paid.quota) == (PricingType.CREDITS, 25, None)
    assert paid.entry is not None
    assert (paid.entry.amount, paid.entry.reason) == (-25, "single_charge")
    assert paid.entry.reference == Reference("single", "k2")
    assert await balance_of(db_pool) == 75
    assert await usage(db_pool) == {}


async def test_starter_does_not_cover_professional(db_pool: asyncpg.Pool) -> None:
    await subscribe(db_pool, Plan.STARTER)
    assert await consume(db_pool, "k1", Tier.PROFESSIONAL) == NotCovered(
        CoverageReason.TIER_NOT_COVERED
    )


@pytest.mark.parametrize("expires_at", [NOW, NOW - timedelta(seconds=1)])
async def test_expired_subscription_covers_nothing(
    db_pool: asyncpg.Pool, expires_at: datetime
) -> None:
    await subscribe(db_pool, Plan.PRO, expires_at=expires_at)
    assert await consume(db_pool, "k1") == NotCovered(CoverageReason.EXPIRED)
    assert isinstance(await consume(db_pool, "k2", now=expires_at - timedelta(seconds=1)), QuotaUse)


async def test_cancelled_or_missing_subscription_covers_nothing(db_pool: asyncpg.Pool) -> None:
    assert await consume(db_pool, "k1") == NotCovered(CoverageReason.NO_SUBSCRIPTION)
    await subscribe(db_pool, Plan.PRO)
    async with db_pool.acquire() as conn:
        await billing.cancel_subscription(conn, USER)
    assert await consume(db_pool, "k2") == NotCovered(CoverageReason.NO_SUBSCRIPTION)
    assert await usage(db_pool) == {}
    assert await db_pool.fetchval("SELECT count(*) FROM quota_consumptions") == 0


async def test_business_day_turns_at_midnight_in_jakarta(db_pool: asyncpg.Pool) -> None:
    """23:59 and 00:01 Jakarta are one UTC day (16:59, 17:01) but two business days."""
    late = datetime(2025, 3, 10, 23, 59, tzinfo=JAKARTA)
    early = datetime(2025, 3, 11, 0, 1, tzinfo=JAKARTA)
    assert late.astimezone(UTC).date() == early.astimezone(UTC).date()
    await subscribe(db_pool, Plan.STARTER)
    await fill(db_pool, "basic", 49, day=late.date())
    before = await consume(db_pool, "late", now=late)
    assert isinstance(before, QuotaUse)
    assert (before.business_date, before.used_today) == (date(2025, 3, 10), 50)
    assert await consume(db_pool, "late2", now=late) == NotCovered(CoverageReason.QUOTA_EXHAUSTED)
    after = await consume(db_pool, "early", now=early)
    assert isinstance(after, QuotaUse)
    assert (after.business_date, after.used_today, after.left_today) == (date(2025, 3, 11), 1, 49)
    assert await usage(db_pool, date(2025, 3, 10)) == {"basic": 50}
    assert await usage(db_pool, date(2025, 3, 11)) == {"basic": 1}


async def test_consume_is_idempotent_per_key(db_pool: asyncpg.Pool) -> None:
    await subscribe(db_pool, Plan.STARTER)
    first = await consume(db_pool, "k1")
    again = await consume(db_pool, "k1")
    assert isinstance(first, QuotaUse)
    assert isinstance(again, QuotaUse)
    assert (first.replayed, again.replayed) == (False, True)
    assert (again.used_today, again.subscription_id) == (1, first.subscription_id)
    assert await usage(db_pool) == {"basic": 1}
    with pytest.raises(IdempotencyConflict):
        await consume(db_pool, "k1", Tier.STANDARD)


async def test_replay_of_the_last_use_is_not_refused(db_pool: asyncpg.Pool) -> None:
    """A redelivery after the quota ran out, or after the plan ended, still replays."""
    await subscribe(db_pool, Plan.STARTER)
    await fill(db_pool, "basic", 49)
    last = await consume(db_pool, "k1")
    assert isinstance(last, QuotaUse)
    assert last.left_today == 0
    again = await consume(db_pool, "k1")
    assert isinstance(again, QuotaUse)
    assert (again.replayed, again.used_today) == (True, 50)
    async with db_pool.acquire() as conn:
        await billing.cancel_subscription(conn, USER)
    after_cancel = await consume(db_pool, "k1")
    assert isinstance(after_cancel, QuotaUse)
    assert after_cancel.replayed


async def test_concurrent_consumes_with_one_key_count_once(pool: asyncpg.Pool) -> None:
    await subscribe(pool, Plan.STARTER)
    results = await asyncio.gather(*(consume(pool, "k1") for _ in range(10)))
    assert sorted(r.replayed for r in results if isinstance(r, QuotaUse)) == [False] + [True] * 9
    assert await usage(pool) == {"basic": 1}


async def test_concurrent_consumes_never_pass_the_quota(pool: asyncpg.Pool) -> None:
    await subscribe(pool, Plan.STARTER)
    results = await asyncio.gather(*(consume(pool, f"k{i}") for i in range(60)))
    assert sum(isinstance(r, QuotaUse) for r in results) == 50
    assert results.count(NotCovered(CoverageReason.QUOTA_EXHAUSTED)) == 10
    assert await usage(pool) == {"basic": 50}


async def test_release_gives_one_use_back_once(db_pool: asyncpg.Pool) -> None:
    await subscribe(db_pool, Plan.STARTER)
    await fill(db_pool, "basic", 49)
    assert isinstance(await consume(db_pool, "k1"), QuotaUse)
    assert await consume(db_pool, "k2") == NotCovered(CoverageReason.QUOTA_EXHAUSTED)
    assert await release(db_pool, "k1") is True
    assert await release(db_pool, "k1") is False
    assert await release(db_pool, "unknown") is False
    assert await usage(db_pool) == {"basic": 49}
    replay = await consume(db_pool, "k1")  # a redelivery of the released request
    assert isinstance(replay, QuotaUse)
    assert replay.replayed
    assert await usage(db_pool) == {"basic": 49}
    assert isinstance(await consume(db_pool, "k3"), QuotaUse)
    assert await usage(db_pool) == {"basic": 50}


async def test_release_returns_the_use_to_its_own_day(db_pool: asyncpg.Pool) -> None:
    await subscribe(db_pool, Plan.STARTER)
    yesterday = NOW - timedelta(days=1)
    await consume(db_pool, "k1", now=yesterday)
    await consume(db_pool, "k2")
    assert await release(db_pool, "k1") is True
    assert await usage(db_pool, yesterday.date()) == {}
    assert await usage(db_pool) == {"basic": 1}


async def test_concurrent_releases_give_back_once(pool: asyncpg.Pool) -> None:
    await subscribe(pool, Plan.STARTER)
    await consume(pool, "k1")
    await consume(pool, "k2")
    results = await asyncio.gather(*(release(pool, "k1") for _ in range(10)))
    assert sorted(results) == [False] * 9 + [True]
    assert await usage(pool) == {"basic": 1}


# Single-image payment ----------------------------------------------------------------------


async def test_60_concurrent_singles_use_the_quota_50_times(pool: asyncpg.Pool) -> None:
    await subscribe(pool, Plan.STARTER)
    await give(pool, 1000)
    results = await asyncio.gather(*(pay(pool, f"s{i}") for i in range(60)))
    payments = [r for r in results if isinstance(r, SinglePayment)]
    assert len(payments) == 60
    by_quota = [p for p in payments if p.pricing_type is PricingType.SUBSCRIPTION]
    by_credits = [p for p in payments if p.pricing_type is PricingType.CREDITS]
    assert (len(by_quota), len(by_credits)) == (50, 10)
    assert all(p.credits_charged == 0 and p.entry is None for p in by_quota)
    assert all(p.credits_charged == 3 and p.quota is None for p in by_credits)
    assert await usage(pool) == {"basic": 50}
    assert await pool.fetchval("SELECT count(*) FROM quota_consumptions") == 50
    charges = await pool.fetch("SELECT amount FROM credit_ledger WHERE reason = 'single_charge'")
    assert sorted(r["amount"] for r in charges) == [-3] * 10
    assert await balance_of(pool) == 1000 - 30


async def test_single_not_covered_and_unaffordable_writes_nothing(db_pool: asyncpg.Pool) -> None:
    await subscribe(db_pool, Plan.STARTER)
    await fill(db_pool, "basic", 50)
    await give(db_pool, 2)
    result = await pay(db_pool, "s1")
    assert result == InsufficientCredits(USER, balance=2, required=3)
    industry = await pay(db_pool, "s2", Tier.INDUSTRY)
    assert industry == InsufficientCredits(USER, balance=2, required=25)
    assert await balance_of(db_pool) == 2
    assert await db_pool.fetchval("SELECT count(*) FROM credit_ledger") == 1  # the grant
    assert await db_pool.fetchval("SELECT count(*) FROM quota_consumptions") == 0
    assert await usage(db_pool) == {"basic": 50}


async def test_single_replay_pays_once_the_same_way(db_pool: asyncpg.Pool) -> None:
    await subscribe(db_pool, Plan.STARTER)
    await give(db_pool, 100)
    await fill(db_pool, "basic", 50)
    by_credits = await pay(db_pool, "s1")
    assert isinstance(by_credits, SinglePayment)
    assert (by_credits.pricing_type, by_credits.replayed) == (PricingType.CREDITS, False)
    # Tomorrow quota is free again, but the redelivered request was already paid in credits.
    again = await pay(db_pool, "s1", now=NOW + timedelta(days=1))
    assert isinstance(again, SinglePayment)
    assert (again.pricing_type, again.credits_charged, again.replayed) == (
        PricingType.CREDITS,
        3,
        True,
    )
    by_quota = await pay(db_pool, "s2", now=NOW + timedelta(days=1))
    replay = await pay(db_pool, "s2", now=NOW + timedelta(days=1))
    assert isinstance(by_quota, SinglePayment)
    assert isinstance(replay, SinglePayment)
    assert (by_quota.replayed, replay.replayed) == (False, True)
    assert replay.pricing_type is PricingType.SUBSCRIPTION
    assert await balance_of(db_pool) == 97
    assert await usage(db_pool, (NOW + timedelta(days=1)).date()) == {"basic": 1}


async def test_concurrent_single_replays_pay_once(pool: asyncpg.Pool) -> None:
    await subscribe(pool, Plan.STARTER)
    await give(pool, 100)
    await fill(pool, "basic", 49)
    results = await asyncio.gather(*(pay(pool, "s1") for _ in range(10)))
    payments = [r for r in results if isinstance(r, SinglePayment)]
    assert len(payments) == 10
    assert {p.pricing_type for p in payments} == {PricingType.SUBSCRIPTION}
    assert sorted(p.replayed for p in payments) == [False] + [True] * 9
    assert await usage(pool) == {"basic": 50}
    assert await balance_of(pool) == 100
