"""The ``bgremove.quote`` reply body: pure pricing applied to the user's balance and plan."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lumiku_bgremover.billing.ledger import balance
from lumiku_bgremover.billing.subscriptions import subscription_snapshot
from lumiku_bgremover.contracts.codes import RejectCode
from lumiku_bgremover.contracts.common import PricingType, RequestMode, Tier
from lumiku_bgremover.contracts.replies import QuoteReply
from lumiku_bgremover.pricing import (
    MAX_IMAGES_PER_BATCH,
    BatchQuote,
    InvalidCount,
    SubscriptionSnapshot,
    SubscriptionStatus,
    decide_single,
    quota_usage,
    quote_batch,
)

if TYPE_CHECKING:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from lumiku_bgremover.billing.models import Conn
    from lumiku_bgremover.contracts.replies import QuoteRequest

__all__ = ["build_quote", "quota_fields", "quote_reply"]


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
    snapshot = await subscription_snapshot(conn, request.user_id, now, tz)
    balance_now = await balance(conn, request.user_id)
    return quote_reply(request, snapshot, balance_now, now, max_images=max_images)
