"""Values the billing layer hands back, its errors, and the connection type it takes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Final, TypeAlias
from uuid import UUID

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from lumiku_bgremover.contracts.common import Plan, PricingType, Tier
from lumiku_bgremover.pricing import CoverageReason, SubscriptionStatus

__all__ = [
    "CHARGE_REASONS",
    "CREDIT_REASONS",
    "BillingError",
    "Conn",
    "IdempotencyConflict",
    "InsufficientCredits",
    "LedgerEntry",
    "NotCovered",
    "QuotaUse",
    "Reference",
    "SinglePayment",
    "Subscription",
]

#: A plain connection or one acquired from a pool; every operation runs inside
#: ``conn.transaction()`` (a savepoint when the caller already opened one).
Conn: TypeAlias = asyncpg.Connection | PoolConnectionProxy

#: Ledger reasons that take credits out of an account.
CHARGE_REASONS: Final = frozenset({"batch_charge", "single_charge"})
#: Ledger reasons that put credits in (``adjustment`` may also take them out).
CREDIT_REASONS: Final = frozenset({"grant", "purchase", "adjustment"})


class BillingError(Exception):
    """A billing operation was asked for something it must refuse."""


class IdempotencyConflict(BillingError):  # noqa: N818 (name fixed by the API brief)
    """An idempotency key was reused for a different operation, amount, user or reference."""

    def __init__(self, key: str, detail: str) -> None:
        self.key = key
        super().__init__(f"idempotency key {key!r} was already used for {detail}")


@dataclass(frozen=True, slots=True)
class Reference:
    """What a ledger entry is about, such as ``Reference("batch", batch_id)``."""

    type: str
    id: str


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One balance change; ``amount`` is signed (charges negative, credits positive).

    ``replayed`` is True when the idempotency key already existed and this is the
    entry first written for it (nothing changed this time).
    """

    id: int
    user_id: str
    amount: int
    balance_after: int
    reason: str
    reference: Reference | None
    idempotency_key: str
    created_at: datetime
    replayed: bool


@dataclass(frozen=True, slots=True)
class InsufficientCredits:
    """A charge refused because ``balance < required``; nothing was written."""

    user_id: str
    balance: int
    required: int


@dataclass(frozen=True, slots=True)
class Subscription:
    """A subscription row: its plan's quotas and tiers as stored when it was set."""

    id: UUID
    user_id: str
    plan: Plan
    status: SubscriptionStatus
    started_at: datetime
    expires_at: datetime
    daily_quota: int
    professional_quota: int | None
    allowed_tiers: frozenset[Tier]

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Subscription:
        """Build from a ``subscriptions`` row (all columns)."""
        return cls(
            id=row["id"],
            user_id=row["user_id"],
            plan=Plan(row["plan"]),
            status=SubscriptionStatus(row["status"]),
            started_at=row["started_at"],
            expires_at=row["expires_at"],
            daily_quota=row["daily_quota"],
            professional_quota=row["professional_quota"],
            allowed_tiers=frozenset(Tier(t) for t in row["allowed_tiers"]),
        )


@dataclass(frozen=True, slots=True)
class QuotaUse:
    """One use of the daily quota, counted for ``business_date``.

    ``used_today`` counts all tiers together; ``left_today`` is what is left for
    ``tier`` (for pro's professional tier, the smaller of the daily and
    professional remainders). ``replayed``: the key had already consumed quota.
    """

    subscription_id: UUID
    business_date: date
    tier: Tier
    used_today: int
    left_today: int
    replayed: bool


@dataclass(frozen=True, slots=True)
class NotCovered:
    """The subscription does not pay for this image; ``reason`` says why."""

    reason: CoverageReason


@dataclass(frozen=True, slots=True)
class SinglePayment:
    """How one image was paid: a quota use (0 credits) or a ledger charge."""

    pricing_type: PricingType
    credits_charged: int
    quota: QuotaUse | None
    entry: LedgerEntry | None

    @property
    def replayed(self) -> bool:
        """True when the key had already paid and nothing changed this time."""
        if self.quota is not None:
            return self.quota.replayed
        return self.entry is not None and self.entry.replayed
