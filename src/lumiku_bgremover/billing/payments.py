"""Paying for one image: a unit of the subscription's daily quota when it covers the
image and quota is left, else the tier's credits."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lumiku_bgremover.billing._sql import LockSpace, require_key, xact_lock
from lumiku_bgremover.billing.ledger import charge, find_entry
from lumiku_bgremover.billing.models import InsufficientCredits, QuotaUse, SinglePayment
from lumiku_bgremover.billing.quota import consume_quota
from lumiku_bgremover.contracts.common import PricingType, Tier
from lumiku_bgremover.pricing import TIERS

if TYPE_CHECKING:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from lumiku_bgremover.billing.models import Conn, LedgerEntry, Reference

__all__ = ["pay_single"]


def _by_credits(result: LedgerEntry | InsufficientCredits) -> SinglePayment | InsufficientCredits:
    if isinstance(result, InsufficientCredits):
        return result
    return SinglePayment(PricingType.CREDITS, -result.amount, None, result)


async def _charge_single(
    conn: Conn, user_id: str, tier: Tier, key: str, reference: Reference
) -> SinglePayment | InsufficientCredits:
    price = TIERS[tier].credits_per_image
    entry = await charge(
        conn, user_id, price, idempotency_key=key, reason="single_charge", reference=reference
    )
    return _by_credits(entry)


async def pay_single(
    conn: Conn,
    user_id: str,
    tier: Tier,
    *,
    now: datetime,
    tz: ZoneInfo,
    idempotency_key: str,
    reference: Reference,
) -> SinglePayment | InsufficientCredits:
    """Pay for one image of ``tier`` at ``now``: quota first, else credits (``single_charge``).

    :class:`InsufficientCredits` when the quota does not cover it and the balance is
    short; nothing is written then. Once per key: a repeated key returns the first
    payment (``replayed``), whichever way it was paid, even if quota has come free
    since; calls with one key are serialised by an advisory lock on the key.
    """
    require_key(idempotency_key)
    async with conn.transaction():
        await xact_lock(conn, LockSpace.SINGLE_PAYMENT, idempotency_key)
        if await find_entry(conn, idempotency_key) is not None:
            return await _charge_single(conn, user_id, tier, idempotency_key, reference)
        use = await consume_quota(
            conn, user_id, tier, now=now, tz=tz, idempotency_key=idempotency_key
        )
        if isinstance(use, QuotaUse):
            return SinglePayment(PricingType.SUBSCRIPTION, 0, use, None)
        return await _charge_single(conn, user_id, tier, idempotency_key, reference)
