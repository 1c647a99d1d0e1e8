"""Operator actions on credits and subscriptions, as contract requests and replies.

Shared by the admin request-reply subjects and the command line, so both give
the same answers. Each takes an asyncpg connection; the clock and the business
time zone are passed in.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from lumiku_bgremover import billing
from lumiku_bgremover.contracts import (
    ContractError,
    CreditBalanceReply,
    CreditBalanceRequest,
    CreditGrantReply,
    CreditGrantRequest,
    GrantReason,
    RejectCode,
    SubscriptionInfo,
    SubscriptionReply,
    SubscriptionSetRequest,
    SubscriptionShowRequest,
    Tier,
)
from lumiku_bgremover.pricing import business_date, quota_usage

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

    from lumiku_bgremover.billing import Conn

__all__ = ["credit_balance", "grant_credits", "set_subscription", "show_subscription"]


async def grant_credits(conn: Conn, request: CreditGrantRequest) -> CreditGrantReply:
    """Add credits once per idempotency key; a reused key for another grant is refused."""
    try:
        entry = await billing.grant(
            conn,
            request.user_id,
            request.amount,
            idempotency_key=request.idempotency_key,
            reason=request.reason.value,
        )
    except billing.IdempotencyConflict as error:
        raise ContractError(RejectCode.INVALID_REQUEST, str(error), "$.idempotency_key") from error
    return CreditGrantReply(
        user_id=entry.user_id,
        amount=entry.amount,
        reason=GrantReason(entry.reason),
        idempotency_key=entry.idempotency_key,
        entry_id=entry.id,
        balance_after=entry.balance_after,
        balance=await billing.balance(conn, request.user_id),
        created_at=entry.created_at,
        replayed=entry.replayed,
    )


async def credit_balance(conn: Conn, request: CreditBalanceRequest) -> CreditBalanceReply:
    """A user's balance (0 for a user never credited)."""
    return CreditBalanceReply(
        user_id=request.user_id, balance=await billing.balance(conn, request.user_id)
    )


def _expiry(request: SubscriptionSetRequest, now: datetime) -> datetime:
    if request.expires_at is None:
        assert request.days is not None  # the contract gives exactly one of them
        return now + timedelta(days=request.days)
    if request.expires_at <= now:
        raise ContractError(
            RejectCode.INVALID_REQUEST, "expires_at must be in the future", "$.expires_at"
        )
    return request.expires_at


async def set_subscription(
    conn: Conn, request: SubscriptionSetRequest, *, now: datetime, tz: ZoneInfo
) -> SubscriptionReply:
    """Start the plan at `now` (replacing an active one); answer it with today's quota."""
    expires_at = _expiry(request, now)
    async with conn.transaction():
        await billing.set_subscription(
            conn, request.user_id, request.plan, expires_at=expires_at, started_at=now
        )
        return await show_subscription(
            conn, SubscriptionShowRequest(user_id=request.user_id), now=now, tz=tz
        )


def _info(sub: billing.Subscription) -> SubscriptionInfo:
    return SubscriptionInfo(
        plan=sub.plan,
        status=sub.status.value,
        started_at=sub.started_at,
        expires_at=sub.expires_at,
        daily_quota=sub.daily_quota,
        professional_quota=sub.professional_quota,
        allowed_tiers=tuple(t for t in Tier if t in sub.allowed_tiers),
    )


async def show_subscription(
    conn: Conn, request: SubscriptionShowRequest, *, now: datetime, tz: ZoneInfo
) -> SubscriptionReply:
    """The user's subscription active at `now` and its usage on today's business date."""
    day = business_date(now, tz)
    sub = await billing.active_subscription(conn, request.user_id, now)
    snapshot = (
        None if sub is None else await billing.subscription_snapshot(conn, request.user_id, now, tz)
    )
    if sub is None or snapshot is None:  # none, or cancelled between the two reads
        return SubscriptionReply(
            user_id=request.user_id,
            subscription=None,
            business_date=day,
            quota_used=None,
            quota_left=None,
        )
    usage = quota_usage(snapshot)
    return SubscriptionReply(
        user_id=request.user_id,
        subscription=_info(sub),
        business_date=day,
        quota_used=usage.used_today,
        quota_left=usage.left_today,
        professional_used=None if usage.professional_quota is None else usage.professional_used,
        professional_left=usage.professional_left,
    )
