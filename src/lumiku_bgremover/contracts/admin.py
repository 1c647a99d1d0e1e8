"""Admin request-reply contracts (core NATS): credits and subscriptions.

The admin subjects are answered only when the service runs with
`ADMIN_SUBJECTS_ENABLED=true`; otherwise a request gets no responders. Replies
are tagged by `status` like every reply (`"ok"`, or an `ErrorReply`).
"""

from __future__ import annotations

import enum
from datetime import date
from typing import Annotated, Final, Literal

import msgspec

from lumiku_bgremover.contracts.common import (
    AwareDatetime,
    Count,
    Credits,
    Ident,
    Message,
    Plan,
    Tier,
    UserId,
)

#: Most credits one grant may add (a typo guard, far below the ledger's bigint).
MAX_GRANT: Final = 1_000_000_000
#: Longest subscription period one request may set, in days.
MAX_SUBSCRIPTION_DAYS: Final = 366


class GrantReason(enum.StrEnum):
    """Why credits are added (the ledger's reason)."""

    GRANT = "grant"
    PURCHASE = "purchase"
    ADJUSTMENT = "adjustment"


class CreditGrantRequest(Message, frozen=True, kw_only=True):
    """Add credits to a user's balance, exactly once per `idempotency_key`."""

    user_id: UserId
    amount: Annotated[int, msgspec.Meta(ge=1, le=MAX_GRANT)]
    idempotency_key: Ident
    reason: GrantReason = GrantReason.GRANT


class CreditGrantReply(Message, tag="ok", tag_field="status", frozen=True, kw_only=True):
    """The ledger entry of a grant and the balance after it.

    A repeated request with the same `idempotency_key` answers the original entry
    (`balance_after` as it was then) with `replayed` true and adds nothing;
    `balance` is the balance now. The same key with another user, amount or reason
    is refused (`invalid_request` at `$.idempotency_key`).
    """

    user_id: UserId
    amount: Credits
    reason: GrantReason
    idempotency_key: Ident
    entry_id: Annotated[int, msgspec.Meta(ge=1)]
    balance_after: Credits
    balance: Credits
    created_at: AwareDatetime
    replayed: bool


class CreditBalanceRequest(Message, frozen=True, kw_only=True):
    """Ask for a user's credit balance."""

    user_id: UserId


class CreditBalanceReply(Message, tag="ok", tag_field="status", frozen=True, kw_only=True):
    """A user's credit balance (0 for a user never seen)."""

    user_id: UserId
    balance: Credits


class SubscriptionSetRequest(Message, frozen=True, kw_only=True):
    """Give a user a plan from now, for `days` days OR until `expires_at` (not both).

    An active subscription is replaced.
    """

    user_id: UserId
    plan: Plan
    days: Annotated[int, msgspec.Meta(ge=1, le=MAX_SUBSCRIPTION_DAYS)] | None = None
    expires_at: AwareDatetime | None = None

    def __post_init__(self) -> None:
        if (self.days is None) == (self.expires_at is None):
            raise ValueError("give either days or expires_at")


class SubscriptionShowRequest(Message, frozen=True, kw_only=True):
    """Ask for a user's active subscription and today's quota."""

    user_id: UserId


class SubscriptionInfo(Message, frozen=True, kw_only=True):
    """A subscription as stored: plan, period, quotas and covered tiers."""

    plan: Plan
    status: Literal["active", "cancelled", "expired"]
    started_at: AwareDatetime
    expires_at: AwareDatetime
    daily_quota: Annotated[int, msgspec.Meta(ge=1)]
    professional_quota: Count | None
    allowed_tiers: tuple[Tier, ...]


class SubscriptionReply(Message, tag="ok", tag_field="status", frozen=True, kw_only=True):
    """A user's active subscription (null without one) and its usage on `business_date`.

    The business day turns at midnight in the configured time zone. The quota
    counts every tier together; `professional_*` is the professional share (pro).
    """

    user_id: UserId
    subscription: SubscriptionInfo | None
    business_date: date
    quota_used: Count | None
    quota_left: Count | None
    professional_used: Count | None = None
    professional_left: Count | None = None
