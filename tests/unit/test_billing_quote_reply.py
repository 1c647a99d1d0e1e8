"""The pure part of the quote: `billing.quote_reply` over a snapshot and a balance."""

from datetime import UTC, datetime, timedelta

import pytest

from lumiku_bgremover.billing import quote_reply
from lumiku_bgremover.billing.quotes import quota_fields
from lumiku_bgremover.contracts.codes import RejectCode
from lumiku_bgremover.contracts.common import Plan, PricingType, RequestMode, Tier
from lumiku_bgremover.contracts.replies import QuoteRequest
from lumiku_bgremover.pricing import SubscriptionSnapshot, SubscriptionStatus

NOW = datetime(2025, 3, 10, 3, 0, tzinfo=UTC)


def snapshot(
    plan: Plan = Plan.STARTER,
    *,
    status: SubscriptionStatus = SubscriptionStatus.ACTIVE,
    expires_at: datetime = NOW + timedelta(days=1),
    used: dict[Tier, int] | None = None,
) -> SubscriptionSnapshot:
    return SubscriptionSnapshot.from_plan(
        plan, status=status, expires_at=expires_at, used_today_by_tier=used
    )


def single(tier: Tier = Tier.BASIC) -> QuoteRequest:
    return QuoteRequest(user_id="u1", tier=tier, count=1, mode=RequestMode.SINGLE)


@pytest.mark.parametrize(
    ("snap", "balance", "pricing_type", "total", "reason"),
    [
        (None, 3, PricingType.CREDITS, 3, None),
        (None, 2, PricingType.CREDITS, 3, RejectCode.INSUFFICIENT_CREDITS),
        (snapshot(), 0, PricingType.SUBSCRIPTION, 0, None),
        (snapshot(used={Tier.STANDARD: 50}), 0, PricingType.CREDITS, 3, "insufficient_credits"),
        (snapshot(status=SubscriptionStatus.CANCELLED), 5, PricingType.CREDITS, 3, None),
        (snapshot(expires_at=NOW), 5, PricingType.CREDITS, 3, None),
    ],
)
def test_single_quote(
    snap: SubscriptionSnapshot | None,
    balance: int,
    pricing_type: PricingType,
    total: int,
    reason: str | None,
) -> None:
    reply = quote_reply(single(), snap, balance, NOW)
    assert (reply.pricing_type, reply.total, reply.base_total, reply.discount) == (
        pricing_type,
        total,
        total,
        0,
    )
    assert reply.credits_per_image == total
    assert reply.reason == reason
    assert reply.accepted is (reason is None)
    assert reply.sufficient is (reason is None)
    assert reply.balance == balance


def test_batch_quote_on_a_subscription_is_credits_with_quota_info() -> None:
    request = QuoteRequest(user_id="u1", tier=Tier.STANDARD, count=100)
    reply = quote_reply(request, snapshot(used={Tier.BASIC: 7}), 1000, NOW)
    assert (reply.total, reply.discount_pct, reply.per_image) == (720, 10, "7.2")
    assert (reply.pricing_type, reply.quota_used, reply.quota_left) == (
        PricingType.CREDITS,
        7,
        43,
    )


@pytest.mark.parametrize(
    ("snap", "tier", "expected"),
    [
        (None, Tier.BASIC, (None, None)),
        (snapshot(status=SubscriptionStatus.CANCELLED), Tier.BASIC, (None, None)),
        (snapshot(status=SubscriptionStatus.EXPIRED), Tier.BASIC, (None, None)),
        (snapshot(expires_at=NOW), Tier.BASIC, (None, None)),
        (snapshot(used={Tier.BASIC: 60}), Tier.BASIC, (60, 0)),
        (snapshot(Plan.PRO, used={Tier.PROFESSIONAL: 45, Tier.BASIC: 5}), Tier.BASIC, (50, 150)),
        (
            snapshot(Plan.PRO, used={Tier.PROFESSIONAL: 45, Tier.BASIC: 5}),
            Tier.PROFESSIONAL,
            (50, 5),
        ),
    ],
)
def test_quota_fields(
    snap: SubscriptionSnapshot | None, tier: Tier, expected: tuple[int | None, int | None]
) -> None:
    assert quota_fields(snap, tier, NOW) == expected
