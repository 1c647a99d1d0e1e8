"""The ``bgremove.quote`` reply body: pure pricing applied to the user's balance and plan."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Final

from lumiku_bgremover.billing.models import Subscription
from lumiku_bgremover.billing.subscriptions import snapshot_of
from lumiku_bgremover.contracts.codes import RejectCode
from lumiku_bgremover.contracts.common import PricingType, RequestMode, Tier
from lumiku_bgremover.contracts.replies import QuoteReply
from lumiku_bgremover.pricing import (
    MAX_IMAGES_PER_BATCH,
    BatchQuote,
    InvalidCount,
    SubscriptionSnapshot,
    SubscriptionStatus,
    business_date,
    decide_single,
    quota_usage,
    quote_batch,
)

if TYPE_CHECKING:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from lumiku_bgremover.billing.models import Conn
    from lumiku_bgremover.contracts.replies import QuoteRequest

__all__ = ["QUOTE_STATE_SQL", "build_quote", "quota_fields", "quote_reply", "quote_state"]

#: Everything a quote reads, in one statement (one round trip): the balance, the user's
#: active-status subscription (all columns, NULL when none) and its usage per tier on the
#: business date (a jsonb object, NULL without a subscription). $1 user, $2 date.
QUOTE_STATE_SQL: Final = """
SELECT
    (SELECT balance FROM credit_accounts WHERE user_id = $1) AS _balance,
    (SELECT jsonb_object_agg(u.tier, u.used) FROM daily_usage AS u
     WHERE u.subscription_id = s.id AND u.business_date = $2 AND u.used > 0) AS _usage,
    s.*
FROM (SELECT 1) AS one
LEFT JOIN subscriptions AS s ON s.user_id = $1 AND s.status = 'active'
"""


def quota_fields(
    snapshot: SubscriptionSnapshot | None, tier: Tier, now: datetime
) -> tuple[int | None, int | None]:
    """``(quota_used, quota_left)`` for the reply: today's usage and what is left for
    ``tier``; ``(None, None)`` without a subscription that is active at ``now``."""
    live = (
        snapshot is not None
        and snapshot.status is SubscriptionStatus.ACTIVE
        and now < snapshot.expires_at
    )
    if snapshot is None or not live:
        return None, None
    usage = quota_usage(snapshot)
    return usage.used_today, usage.left_for(tier)


def _price(
    request: QuoteRequest, snapshot: SubscriptionSnapshot | None, now: datetime, max_images: int
) -> tuple[BatchQuote, PricingType]:
    if request.mode is RequestMode.BATCH:
        return quote_batch(request.tier, request.count, max_images=max_images), PricingType.CREDITS
    if request.count != 1:
        raise InvalidCount(request.count, 1)
    single = decide_single(request.tier, snapshot, now)
    cost = single.credits
    return BatchQuote(request.tier, 1, cost, cost, 0, 0, cost), single.pricing_type


def quote_reply(
    request: QuoteRequest,
    snapshot: SubscriptionSnapshot | None,
    balance_now: int,
    now: datetime,
    *,
    max_images: int = MAX_IMAGES_PER_BATCH,
) -> QuoteReply:
    """The quote for ``request`` given the user's state (pure; see :func:`build_quote`)."""
    price, pricing_type = _price(request, snapshot, now, max_images)
    quota_used, quota_left = quota_fields(snapshot, request.tier, now)
    sufficient = balance_now >= price.total
    return QuoteReply(
        tier=request.tier,
        count=request.count,
        mode=request.mode,
        credits_per_image=price.credits_per_image,
        base_total=price.base_total,
        discount_pct=price.discount_pct,
        discount=price.discount,
        total=price.total,
        per_image=price.per_image_str,
        pricing_type=pricing_type,
        quota_used=quota_used,
        quota_left=quota_left,
        balance=balance_now,
        sufficient=sufficient,
        accepted=sufficient,
        reason=None if sufficient else RejectCode.INSUFFICIENT_CREDITS,
    )


async def build_quote(
    conn: Conn,
    request: QuoteRequest,
    *,
    now: datetime,
    tz: ZoneInfo,
    max_images: int = MAX_IMAGES_PER_BATCH,
) -> QuoteReply:
    """Price ``request`` for its user at ``now`` (business day in ``tz``); writes nothing.

    A batch is priced in credits with the volume discount; a single image (``count``
    must be 1) by the subscription when it covers the tier with quota left, else in
    credits. ``sufficient``: the balance covers ``total``; ``accepted`` is the same
    today, with ``reason`` ``insufficient_credits`` when not. Raises
    ``pricing.InvalidCount`` for a count outside ``1..max_images`` (1 for a single).
    """
    snapshot, balance_now = await quote_state(conn, request.user_id, now, tz)
    return quote_reply(request, snapshot, balance_now, now, max_images=max_images)


async def quote_state(
    conn: Conn, user_id: str, now: datetime, tz: ZoneInfo
) -> tuple[SubscriptionSnapshot | None, int]:
    """The user's subscription snapshot (as ``subscription_snapshot``) and balance
    (as ``ledger.balance``), read by one statement in one snapshot of the database."""
    row = await conn.fetchrow(QUOTE_STATE_SQL, user_id, business_date(now, tz))
    assert row is not None  # the LEFT JOIN on one row always gives one row
    balance_now = 0 if row["_balance"] is None else int(row["_balance"])
    if row["id"] is None:
        return None, balance_now
    return snapshot_of(Subscription.from_row(row), _usage(row["_usage"])), balance_now


def _usage(raw: Any) -> dict[Tier, int]:
    """Per-tier usage from the jsonb object (decoded by the pool's codec, or text)."""
    if raw is None:
        return {}
    mapping = json.loads(raw) if isinstance(raw, str) else raw
    return {Tier(tier): int(used) for tier, used in mapping.items()}
