"""Table tests of the pure pricing rules against the product spec's examples."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from types import MappingProxyType
from zoneinfo import ZoneInfo

import pytest

from lumiku_bgremover.contracts.common import Plan, Tier
from lumiku_bgremover.pricing import (
    PLANS,
    TIERS,
    BatchCharge,
    CoverageReason,
    InvalidCount,
    PricingError,
    PricingType,
    RefundError,
    SubscriptionSnapshot,
    SubscriptionStatus,
    UnknownTier,
    business_date,
    cost_of_successes,
    decide_single,
    discount_pct,
    parse_tier,
    quota_usage,
    quote_batch,
    refund_due,
    refund_single,
    refund_total,
)

JAKARTA = ZoneInfo("Asia/Jakarta")
NOW = datetime(2025, 6, 15, 10, 0, tzinfo=JAKARTA)
LATER = NOW + timedelta(days=20)


# --- tiers -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("tier", "row"),
    [
        (Tier.BASIC, (3, "briaai/RMBG-1.4", "huggingface", 300, "17.5", "282.5", "94.17")),
        (Tier.STANDARD, (8, "briaai/RMBG-2.0", "huggingface", 800, "51.75", "748.25", "93.53")),
        (
            Tier.PROFESSIONAL,
            (15, "birefnet-general", "segmind", 1500, "86.25", "1413.75", "94.25"),
        ),
        (Tier.INDUSTRY, (25, "birefnet-portrait", "segmind", 2500, "138", "2362", "94.48")),
    ],
)
def test_tier_table(tier: Tier, row: tuple[int, str, str, int, str, str, str]) -> None:
    credits_per_image, model, provider, price, cost, margin, margin_pct = row
    got = TIERS[tier]
    assert got.tier is tier
    assert got.credits_per_image == credits_per_image
    assert (got.model, got.provider, got.price_idr) == (model, provider, price)
    assert isinstance(got.cost_idr, Decimal)
    assert got.cost_idr == Decimal(cost)
    assert got.margin_idr == Decimal(margin)
    assert got.margin_pct == Decimal(margin_pct)


def test_tier_table_covers_every_tier_and_is_read_only() -> None:
    assert set(TIERS) == set(Tier)
    with pytest.raises(TypeError):
        TIERS[Tier.BASIC] = TIERS[Tier.INDUSTRY]  # type: ignore[index]


@pytest.mark.parametrize("tier", list(Tier))
def test_parse_tier_accepts_every_tier_value(tier: Tier) -> None:
    assert parse_tier(tier.value) is tier


@pytest.mark.parametrize("value", ["ultra", "", "Basic", " basic", "pro"])
def test_parse_tier_refuses_unknown_values(value: str) -> None:
    with pytest.raises(UnknownTier) as info:
        parse_tier(value)
    assert info.value.value == value
    assert isinstance(info.value, PricingError)
    assert repr(value) in str(info.value)


# --- discounts and batch quotes ---------------------------------------------


@pytest.mark.parametrize(
    ("count", "pct"),
    [
        (1, 0),
        (19, 0),
        (20, 5),
        (50, 5),
        (51, 10),
        (100, 10),
        (101, 15),
        (200, 15),
        (201, 20),
        (500, 20),
    ],
)
def test_discount_pct_bands(count: int, pct: int) -> None:
    assert discount_pct(count) == pct


@pytest.mark.parametrize("count", [0, -1, 501, 10_000])
def test_counts_outside_limit_are_refused(count: int) -> None:
    with pytest.raises(InvalidCount) as info:
        discount_pct(count)
    assert info.value.count == count
    assert info.value.max_images == 500
    with pytest.raises(InvalidCount):
        quote_batch(Tier.BASIC, count)


def test_max_images_is_overridable() -> None:
    assert discount_pct(600, max_images=1000) == 20
    assert quote_batch(Tier.BASIC, 600, max_images=1000).total == 1800 - 360
    with pytest.raises(InvalidCount):
        discount_pct(11, max_images=10)
    with pytest.raises(InvalidCount):
        quote_batch(Tier.BASIC, 11, max_images=10)


@pytest.mark.parametrize(
    ("tier", "count", "expected"),
    [
        (Tier.STANDARD, 19, (152, 0, 0, 152)),
        (Tier.STANDARD, 20, (160, 5, 8, 152)),
        (Tier.STANDARD, 50, (400, 5, 20, 380)),
        (Tier.STANDARD, 51, (408, 10, 40, 368)),
        (Tier.STANDARD, 100, (800, 10, 80, 720)),
        (Tier.STANDARD, 101, (808, 15, 121, 687)),
        (Tier.STANDARD, 200, (1600, 15, 240, 1360)),
        (Tier.STANDARD, 201, (1608, 20, 321, 1287)),
        (Tier.STANDARD, 500, (4000, 20, 800, 3200)),
        (Tier.BASIC, 300, (900, 20, 180, 720)),
        (Tier.BASIC, 21, (63, 5, 3, 60)),
        (Tier.INDUSTRY, 1, (25, 0, 0, 25)),
        (Tier.PROFESSIONAL, 100, (1500, 10, 150, 1350)),
        (Tier.PROFESSIONAL, 51, (765, 10, 76, 689)),
    ],
)
def test_quote_batch_spec_examples(
    tier: Tier, count: int, expected: tuple[int, int, int, int]
) -> None:
    base, pct, discount, total = expected
    quote = quote_batch(tier, count)
    assert quote.tier is tier
    assert quote.count == count
    assert quote.credits_per_image == TIERS[tier].credits_per_image
    assert quote.base_total == base
    assert quote.discount_pct == pct
    assert quote.discount == discount
    assert quote.total == total
    assert quote.per_image == Fraction(total, count)


@pytest.mark.parametrize(
    ("tier", "count", "text"),
    [
        (Tier.STANDARD, 20, "7.6"),
        (Tier.STANDARD, 19, "8"),
        (Tier.BASIC, 300, "2.4"),
        (Tier.PROFESSIONAL, 100, "13.5"),
        (Tier.INDUSTRY, 1, "25"),
        (Tier.BASIC, 21, "2.8571"),  # 60 / 21, non-terminating
        (Tier.STANDARD, 21, "7.6190"),  # 160 / 21, rounded to 4 places
        (Tier.PROFESSIONAL, 51, "13.5098"),  # 689 / 51
        (Tier.STANDARD, 201, "6.4030"),  # 1287 / 201
        (Tier.BASIC, 64, "2.703125"),  # 173 / 64: exact, more than 4 places
    ],
)
def test_per_image_str(tier: Tier, count: int, text: str) -> None:
    assert quote_batch(tier, count).per_image_str == text


# --- plans and single-image decisions ------------------------------------------


def test_plan_rules() -> None:
    starter, pro = PLANS[Plan.STARTER], PLANS[Plan.PRO]
    assert (starter.monthly_price_idr, starter.daily_quota) == (99_000, 50)
    assert starter.allowed_tiers == {Tier.BASIC, Tier.STANDARD}
    assert starter.professional_daily_cap is None
    assert (pro.monthly_price_idr, pro.daily_quota) == (299_000, 200)
    assert pro.allowed_tiers == {Tier.BASIC, Tier.STANDARD, Tier.PROFESSIONAL}
    assert pro.professional_daily_cap == 50
    assert all(Tier.INDUSTRY not in rules.allowed_tiers for rules in PLANS.values())
    with pytest.raises(TypeError):
        PLANS[Plan.PRO] = starter  # type: ignore[index]


def _snap(
    plan: Plan,
    used: dict[Tier, int] | None = None,
    *,
    status: SubscriptionStatus = SubscriptionStatus.ACTIVE,
    expires_at: datetime = LATER,
) -> SubscriptionSnapshot:
    return SubscriptionSnapshot.from_plan(
        plan, status=status, expires_at=expires_at, used_today_by_tier=used
    )


SUB = PricingType.SUBSCRIPTION
CRED = PricingType.CREDITS
R = CoverageReason
ACTIVE = SubscriptionStatus.ACTIVE


@pytest.mark.parametrize(
    ("tier", "snapshot", "pricing_type", "charged", "reason"),
    [
        (Tier.BASIC, _snap(Plan.STARTER), SUB, 0, R.COVERED),
        (Tier.STANDARD, _snap(Plan.STARTER, {Tier.BASIC: 49}), SUB, 0, R.COVERED),
        (Tier.PROFESSIONAL, _snap(Plan.STARTER), CRED, 15, R.TIER_NOT_COVERED),
        (Tier.INDUSTRY, _snap(Plan.STARTER), CRED, 25, R.TIER_NOT_COVERED),
        (Tier.INDUSTRY, _snap(Plan.PRO), CRED, 25, R.TIER_NOT_COVERED),
        (Tier.PROFESSIONAL, _snap(Plan.PRO, {Tier.PROFESSIONAL: 49}), SUB, 0, R.COVERED),
        (
            Tier.PROFESSIONAL,
            _snap(Plan.PRO, {Tier.PROFESSIONAL: 50}),
            CRED,
            15,
            R.PROFESSIONAL_QUOTA_EXHAUSTED,
        ),
        (Tier.BASIC, _snap(Plan.PRO, {Tier.PROFESSIONAL: 50}), SUB, 0, R.COVERED),
        (
            Tier.BASIC,
            _snap(Plan.STARTER, {Tier.BASIC: 30, Tier.STANDARD: 20}),
            CRED,
            3,
            R.QUOTA_EXHAUSTED,
        ),
        (Tier.STANDARD, _snap(Plan.STARTER, {Tier.BASIC: 50}), CRED, 8, R.QUOTA_EXHAUSTED),
        (
            Tier.PROFESSIONAL,
            _snap(Plan.PRO, {Tier.BASIC: 190, Tier.PROFESSIONAL: 10}),
            CRED,
            15,
            R.QUOTA_EXHAUSTED,
        ),
        (Tier.BASIC, _snap(Plan.PRO, {Tier.STANDARD: 199}), SUB, 0, R.COVERED),
        (Tier.BASIC, _snap(Plan.STARTER, expires_at=NOW), CRED, 3, R.EXPIRED),
        (Tier.BASIC, _snap(Plan.STARTER, expires_at=NOW - timedelta(days=1)), CRED, 3, R.EXPIRED),
        (
            Tier.BASIC,
            _snap(Plan.STARTER, status=SubscriptionStatus.EXPIRED),
            CRED,
            3,
            R.EXPIRED,
        ),
        (
            Tier.STANDARD,
            _snap(Plan.PRO, status=SubscriptionStatus.CANCELLED),
            CRED,
            8,
            R.INACTIVE,
        ),
        (Tier.STANDARD, None, CRED, 8, R.NO_SUBSCRIPTION),
        (Tier.INDUSTRY, None, CRED, 25, R.NO_SUBSCRIPTION),
    ],
)
def test_decide_single(
    tier: Tier,
    snapshot: SubscriptionSnapshot | None,
    pricing_type: PricingType,
    charged: int,
    reason: CoverageReason,
) -> None:
    decision = decide_single(tier, snapshot, NOW)
    assert decision.tier is tier
    assert decision.pricing_type is pricing_type
    assert decision.credits == charged
    assert decision.reason is reason
    assert decision.uses_subscription is (pricing_type is SUB)


def test_industry_is_never_covered_even_if_a_snapshot_claims_it() -> None:
    snapshot = SubscriptionSnapshot(
        plan=Plan.PRO,
        status=ACTIVE,
        expires_at=LATER,
        allowed_tiers=frozenset(Tier),
        daily_quota=200,
        professional_quota=50,
    )
    assert decide_single(Tier.INDUSTRY, snapshot, NOW).reason is R.TIER_NOT_COVERED
    assert decide_single(Tier.STANDARD, snapshot, NOW).reason is R.COVERED


def test_expiry_is_compared_as_instants_across_time_zones() -> None:
    snapshot = _snap(Plan.STARTER, expires_at=datetime(2025, 6, 15, 3, 0, 1, tzinfo=UTC))
    assert decide_single(Tier.BASIC, snapshot, NOW).reason is R.COVERED  # NOW = 03:00 UTC
    assert decide_single(Tier.BASIC, snapshot, NOW + timedelta(seconds=1)).reason is R.EXPIRED


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        decide_single(Tier.BASIC, None, datetime(2025, 6, 15, 10, 0))  # noqa: DTZ001
    with pytest.raises(ValueError, match="aware"):
        _snap(Plan.PRO, expires_at=datetime(2025, 7, 1))  # noqa: DTZ001


def test_quota_usage_for_the_quote_reply() -> None:
    usage = quota_usage(_snap(Plan.PRO, {Tier.BASIC: 100, Tier.PROFESSIONAL: 45}))
    assert (usage.daily_quota, usage.used_today, usage.left_today) == (200, 145, 55)
    assert (usage.professional_quota, usage.professional_used) == (50, 45)
    assert usage.professional_left == 5
    assert usage.left_for(Tier.PROFESSIONAL) == 5
    assert usage.left_for(Tier.BASIC) == 55
    starter = quota_usage(_snap(Plan.STARTER, {Tier.STANDARD: 12}))
    assert (starter.left_today, starter.professional_left) == (38, None)
    assert starter.left_for(Tier.STANDARD) == 38


def test_quota_left_is_never_negative() -> None:
    usage = quota_usage(_snap(Plan.PRO, {Tier.BASIC: 180, Tier.PROFESSIONAL: 60}))
    assert usage.left_today == 0
    assert usage.professional_left == 0
    assert usage.left_for(Tier.PROFESSIONAL) == 0


def test_quota_counts_all_tiers_together_for_professional() -> None:
    usage = quota_usage(_snap(Plan.PRO, {Tier.BASIC: 195, Tier.PROFESSIONAL: 2}))
    assert usage.left_for(Tier.PROFESSIONAL) == 3


def test_snapshot_from_plan_sums_usage() -> None:
    snapshot = _snap(Plan.PRO, {Tier.BASIC: 3, Tier.STANDARD: 4, Tier.PROFESSIONAL: 5})
    assert snapshot.used_today_total == 12
    assert snapshot.daily_quota == 200
    assert snapshot.professional_quota == 50
    assert isinstance(snapshot.used_today_by_tier, MappingProxyType)


# --- refunds ---------------------------------------------------------------------


def test_refund_single() -> None:
    paid = decide_single(Tier.PROFESSIONAL, None, NOW)
    assert refund_single(paid) == 15
    covered = decide_single(Tier.PROFESSIONAL, _snap(Plan.PRO), NOW)
    assert covered.uses_subscription
    assert refund_single(covered) == 0


@pytest.mark.parametrize(
    ("tier", "count", "failed", "refund"),
    [
        (Tier.STANDARD, 50, 0, 0),
        (Tier.STANDARD, 50, 10, 76),  # pays 40 * 8 - 16 = 304 of 380
        (Tier.STANDARD, 50, 50, 380),
        (Tier.BASIC, 21, 1, 3),  # pays 60 - floor(3.0) = 57 of 60
        (Tier.BASIC, 21, 20, 57),  # pays 3 - floor(0.15) = 3 of 60
        (Tier.BASIC, 300, 100, 240),  # pays 600 - 120 = 480 of 720
        (Tier.INDUSTRY, 1, 1, 25),
        (Tier.STANDARD, 19, 4, 32),
    ],
)
def test_refund_total_examples(tier: Tier, count: int, failed: int, refund: int) -> None:
    quote = quote_batch(tier, count)
    assert refund_total(quote, failed) == refund
    assert cost_of_successes(quote, count - failed) + refund == quote.total


def test_refunds_in_steps_sum_to_the_final_refund() -> None:
    quote = quote_batch(Tier.STANDARD, 50)
    first = refund_due(quote, 10, 0)  # cancel 10 pending items
    second = refund_due(quote, 13, first)  # then 3 items fail
    assert (first, second) == (76, 22)
    assert first + second == refund_total(quote, 13) == 380 - (37 * 8 - 14)
    assert refund_due(quote, 13, first + second) == 0  # redelivered: nothing more


def test_refund_due_never_negative_nor_over_charge() -> None:
    quote = quote_batch(Tier.STANDARD, 50)
    assert refund_due(quote, 10, 1000) == 0
    assert refund_due(quote, 50, 0) == quote.total


def test_refund_clamps_an_inconsistent_stored_charge() -> None:
    charge = BatchCharge(count=10, credits_per_image=8, discount_pct=0, total=50)
    assert refund_total(charge, 0) == 0
    assert refund_total(charge, 5) == 10
    assert refund_total(charge, 10) == 50


@pytest.mark.parametrize(("failed", "already"), [(-1, 0), (51, 0), (3, -1)])
def test_refund_refuses_impossible_inputs(failed: int, already: int) -> None:
    with pytest.raises(RefundError):
        refund_due(quote_batch(Tier.STANDARD, 50), failed, already)


# --- business day --------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "day"),
    [
        (datetime(2025, 6, 15, 23, 59, tzinfo=JAKARTA), (2025, 6, 15)),
        (datetime(2025, 6, 16, 0, 1, tzinfo=JAKARTA), (2025, 6, 16)),
        (datetime(2025, 6, 15, 16, 59, tzinfo=UTC), (2025, 6, 15)),  # 23:59 in Jakarta
        (datetime(2025, 6, 15, 17, 1, tzinfo=UTC), (2025, 6, 16)),  # 00:01 in Jakarta
        (datetime(2025, 12, 31, 17, 0, tzinfo=UTC), (2026, 1, 1)),
    ],
)
def test_business_date_turns_at_local_midnight(now: datetime, day: tuple[int, int, int]) -> None:
    assert business_date(now, JAKARTA).timetuple()[:3] == day


def test_business_date_depends_on_the_zone() -> None:
    now = datetime(2025, 6, 15, 17, 1, tzinfo=UTC)
    assert business_date(now, ZoneInfo("UTC")).day == 15
    assert business_date(now, JAKARTA).day == 16


def test_business_date_refuses_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="aware"):
        business_date(datetime(2025, 6, 15, 12, 0), JAKARTA)  # noqa: DTZ001
