"""Subscriptions: at most one active per user, its quotas copied from ``pricing.PLANS``.

A subscription covers removals while its status is ``active`` and ``now < expires_at``;
``started_at`` is recorded, not checked (a plan set "from now" must cover at once even
when the database clock is a little ahead of the caller's).
"""

from __future__ import annotations

from datetime import date, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Final
from uuid import UUID

import asyncpg

from lumiku_bgremover.billing._sql import LockSpace, xact_lock
from lumiku_bgremover.billing.models import Subscription
from lumiku_bgremover.contracts.common import Plan, Tier
from lumiku_bgremover.pricing import PLANS, SubscriptionSnapshot, business_date

if TYPE_CHECKING:
    from collections.abc import Mapping
    from zoneinfo import ZoneInfo

    from lumiku_bgremover.billing.models import Conn

__all__ = [
    "active_subscription",
    "cancel_subscription",
    "current_subscription",
    "get_subscription",
    "set_subscription",
    "snapshot_of",
    "subscription_snapshot",
    "usage_by_tier",
]

_INSERT_SQL: Final = """
INSERT INTO subscriptions
    (user_id, plan, started_at, expires_at, daily_quota, professional_quota, allowed_tiers)
VALUES ($1, $2, COALESCE($3, now()), $4, $5, $6, $7)
RETURNING *
"""
_CANCEL_SQL: Final = """
UPDATE subscriptions SET status = 'cancelled' WHERE user_id = $1 AND status = 'active'
RETURNING *
"""
_CURRENT_SQL: Final = "SELECT * FROM subscriptions WHERE user_id = $1 AND status = 'active'"
_BY_ID_SQL: Final = "SELECT * FROM subscriptions WHERE id = $1"
_USAGE_SQL: Final = """
SELECT tier, used FROM daily_usage
WHERE subscription_id = $1 AND business_date = $2 AND used > 0
"""


def _require_aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {value!r}")


async def set_subscription(
    conn: Conn,
    user_id: str,
    plan: Plan,
    *,
    expires_at: datetime,
    started_at: datetime | None = None,
) -> Subscription:
    """Start ``plan`` for the user until ``expires_at``, cancelling any active subscription.

    Daily quota, professional cap and tiers come from ``pricing.PLANS``; ``started_at``
    defaults to the database's ``now()``. Concurrent calls for one user are serialised.
    Raises ValueError when ``expires_at`` is not after the start (nothing changes then).
    """
    _require_aware(expires_at, "expires_at")
    if started_at is not None:
        _require_aware(started_at, "started_at")
        if expires_at <= started_at:
            raise ValueError("expires_at must be after started_at")
    rules = PLANS[plan]
    tiers = [t.value for t in Tier if t in rules.allowed_tiers]
    args = (user_id, plan.value, started_at, expires_at)
    quotas = (rules.daily_quota, rules.professional_daily_cap, tiers)
    try:
        async with conn.transaction():
            await xact_lock(conn, LockSpace.SUBSCRIPTION_USER, user_id)
            await conn.execute(_CANCEL_SQL, user_id)
            row = await conn.fetchrow(_INSERT_SQL, *args, *quotas)
    except asyncpg.CheckViolationError as exc:
        if exc.constraint_name != "subscriptions_period":
            raise
        raise ValueError(f"expires_at {expires_at} is not after the start (now)") from None
    assert row is not None
    return Subscription.from_row(row)


async def cancel_subscription(conn: Conn, user_id: str) -> Subscription | None:
    """Cancel the user's active subscription; return it, or None when there was none."""
    async with conn.transaction():
        row = await conn.fetchrow(_CANCEL_SQL, user_id)
    return None if row is None else Subscription.from_row(row)


async def current_subscription(
    conn: Conn, user_id: str, *, for_update: bool = False
) -> Subscription | None:
    """The user's subscription with status active (expired or not), or None.

    With ``for_update`` the row stays locked until the caller's transaction ends.
    """
    sql = _CURRENT_SQL + (" FOR UPDATE" if for_update else "")
    row = await conn.fetchrow(sql, user_id)
    return None if row is None else Subscription.from_row(row)


async def get_subscription(conn: Conn, subscription_id: UUID) -> Subscription | None:
    """The subscription with id ``subscription_id`` whatever its status, or None."""
    row = await conn.fetchrow(_BY_ID_SQL, subscription_id)
    return None if row is None else Subscription.from_row(row)


async def active_subscription(conn: Conn, user_id: str, now: datetime) -> Subscription | None:
    """The user's subscription if it is active and not expired at ``now``."""
    _require_aware(now, "now")
    sub = await current_subscription(conn, user_id)
    return sub if sub is not None and now < sub.expires_at else None


async def usage_by_tier(conn: Conn, subscription_id: UUID, day: date) -> dict[Tier, int]:
    """Removals used per tier on business date ``day``."""
    rows = await conn.fetch(_USAGE_SQL, subscription_id, day)
    return {Tier(row["tier"]): int(row["used"]) for row in rows}


def snapshot_of(sub: Subscription, used: Mapping[Tier, int]) -> SubscriptionSnapshot:
    """The pricing view of ``sub`` with the day's usage ``used``."""
    return SubscriptionSnapshot(
        plan=sub.plan,
        status=sub.status,
        expires_at=sub.expires_at,
        allowed_tiers=sub.allowed_tiers,
        daily_quota=sub.daily_quota,
        professional_quota=sub.professional_quota,
        used_today_total=sum(used.values()),
        used_today_by_tier=MappingProxyType(dict(used)),
    )


async def subscription_snapshot(
    conn: Conn, user_id: str, now: datetime, tz: ZoneInfo
) -> SubscriptionSnapshot | None:
    """The user's active-status subscription with its usage on the business date of ``now``.

    An expired one is returned too (``pricing.decide_single`` says ``expired``);
    None when the user has no subscription with status active.
    """
    day = business_date(now, tz)
    sub = await current_subscription(conn, user_id)
    if sub is None:
        return None
    return snapshot_of(sub, await usage_by_tier(conn, sub.id, day))
