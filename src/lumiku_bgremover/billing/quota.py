"""Daily subscription quota: consume one use per request key, give it back once.

``daily_usage`` holds the counters checked against the plan; ``quota_consumptions``
(migration 0002) records each use under its idempotency key. The subscription row is
locked (``FOR UPDATE``) before today's usage is read, so concurrent requests of one
user are counted one after the other and the counter never passes the quota.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import asyncpg

from lumiku_bgremover.billing._sql import is_unique_violation, require_key
from lumiku_bgremover.billing.models import IdempotencyConflict, NotCovered, QuotaUse
from lumiku_bgremover.billing.subscriptions import (
    current_subscription,
    get_subscription,
    snapshot_of,
    usage_by_tier,
)
from lumiku_bgremover.contracts.common import Tier
from lumiku_bgremover.pricing import CoverageReason, business_date, decide_single, quota_usage

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import date, datetime
    from zoneinfo import ZoneInfo

    from lumiku_bgremover.billing.models import Conn, Subscription

__all__ = ["consume_quota", "release_quota"]

_KEY_CONSTRAINT: Final = "quota_consumptions_pkey"
_FIND_SQL: Final = """
SELECT subscription_id, user_id, business_date, tier
FROM quota_consumptions WHERE idempotency_key = $1
"""
_INSERT_SQL: Final = """
INSERT INTO quota_consumptions (idempotency_key, subscription_id, user_id, business_date, tier)
VALUES ($1, $2, $3, $4, $5)
"""
_COUNT_SQL: Final = """
INSERT INTO daily_usage AS d (subscription_id, business_date, tier, used) VALUES ($1, $2, $3, 1)
ON CONFLICT (subscription_id, business_date, tier) DO UPDATE SET used = d.used + 1
"""
_RELEASE_SQL: Final = """
UPDATE quota_consumptions SET released_at = now()
WHERE idempotency_key = $1 AND released_at IS NULL
RETURNING subscription_id, business_date, tier
"""
_UNCOUNT_SQL: Final = """
UPDATE daily_usage SET used = used - 1
WHERE subscription_id = $1 AND business_date = $2 AND tier = $3 AND used > 0
"""


def _use(
    sub: Subscription, day: date, tier: Tier, used: Mapping[Tier, int], *, replayed: bool
) -> QuotaUse:
    usage = quota_usage(snapshot_of(sub, used))
    return QuotaUse(sub.id, day, tier, usage.used_today, usage.left_for(tier), replayed)


async def _replay(conn: Conn, user_id: str, tier: Tier, key: str) -> QuotaUse | None:
    """The use recorded under ``key`` (``replayed=True``) with its day's usage now, or None."""
    row = await conn.fetchrow(_FIND_SQL, key)
    if row is None:
        return None
    if (row["user_id"], row["tier"]) != (user_id, tier.value):
        detail = f"a {row['tier']} quota use of user {row['user_id']!r}"
        raise IdempotencyConflict(key, detail)
    sub = await get_subscription(conn, row["subscription_id"])
    assert sub is not None  # the foreign key cascades deletes
    used = await usage_by_tier(conn, sub.id, row["business_date"])
    return _use(sub, row["business_date"], tier, used, replayed=True)


async def _lock_current(conn: Conn, user_id: str) -> Subscription | None:
    sub = await current_subscription(conn, user_id, for_update=True)
    if sub is None:
        # A subscription replaced while we waited for its lock is skipped by the locking
        # read, and its successor was not in that read's snapshot: look once more.
        sub = await current_subscription(conn, user_id, for_update=True)
    return sub


async def _record(conn: Conn, sub: Subscription, tier: Tier, day: date, key: str) -> bool:
    """Write the use and count it; False when a twin with this key got there first."""
    try:
        async with conn.transaction():
            await conn.execute(_INSERT_SQL, key, sub.id, sub.user_id, day, tier.value)
            await conn.execute(_COUNT_SQL, sub.id, day, tier.value)
    except asyncpg.UniqueViolationError as exc:
        if not is_unique_violation(exc, _KEY_CONSTRAINT):
            raise
        return False
    return True


async def consume_quota(
    conn: Conn,
    user_id: str,
    tier: Tier,
    *,
    now: datetime,
    tz: ZoneInfo,
    idempotency_key: str,
) -> QuotaUse | NotCovered:
    """Use one unit of today's quota (business date of ``now`` in ``tz``) for ``tier``.

    Returns :class:`NotCovered` (nothing written) without an active, unexpired
    subscription covering ``tier`` with quota left. A key already used returns that
    use with ``replayed=True``, counting nothing, even if it was released since; the
    key with another user or tier raises :class:`IdempotencyConflict`.
    """
    require_key(idempotency_key)
    day = business_date(now, tz)
    async with conn.transaction():
        sub = await _lock_current(conn, user_id)
        replayed = await _replay(conn, user_id, tier, idempotency_key)
        if replayed is not None:
            return replayed
        if sub is None:
            return NotCovered(CoverageReason.NO_SUBSCRIPTION)
        used = await usage_by_tier(conn, sub.id, day)
        decision = decide_single(tier, snapshot_of(sub, used), now)
        if not decision.uses_subscription:
            return NotCovered(decision.reason)
        if not await _record(conn, sub, tier, day, idempotency_key):
            replayed = await _replay(conn, user_id, tier, idempotency_key)
            assert replayed is not None
            return replayed
        return _use(sub, day, tier, {**used, tier: used.get(tier, 0) + 1}, replayed=False)


async def release_quota(conn: Conn, *, idempotency_key: str) -> bool:
    """Give back the use recorded under ``idempotency_key`` (a failed single image).

    It returns to the business date it was taken from. True when released by this
    call; False when the key has no use or it was already released.
    """
    require_key(idempotency_key)
    async with conn.transaction():
        row = await conn.fetchrow(_RELEASE_SQL, idempotency_key)
        if row is None:
            return False
        await conn.execute(_UNCOUNT_SQL, row["subscription_id"], row["business_date"], row["tier"])
    return True
