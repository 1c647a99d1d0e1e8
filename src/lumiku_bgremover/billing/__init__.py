"""Billing on PostgreSQL: the credit ledger, subscriptions, daily quotas, payments, quotes.

Every operation takes a connection (plain or from a pool) and runs in
``conn.transaction()``, a savepoint when the caller already opened a transaction, so
intake can create a batch and charge it atomically. Idempotency keys are required.
Run at READ COMMITTED (PostgreSQL's default).
"""

from lumiku_bgremover.billing.ledger import (
    adjust,
    balance,
    charge,
    find_entry,
    grant,
    ledger_entries,
    refund,
    refundable,
)
from lumiku_bgremover.billing.models import (
    BillingError,
    Conn,
    IdempotencyConflict,
    InsufficientCredits,
    LedgerEntry,
    NotCovered,
    QuotaUse,
    Reference,
    SinglePayment,
    Subscription,
)
from lumiku_bgremover.billing.payments import pay_single
from lumiku_bgremover.billing.quota import consume_quota, release_quota
from lumiku_bgremover.billing.quotes import build_quote, quote_reply
from lumiku_bgremover.billing.subscriptions import (
    active_subscription,
    cancel_subscription,
    current_subscription,
    set_subscription,
    subscription_snapshot,
)

__all__ = [
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
    "active_subscription",
    "adjust",
    "balance",
    "build_quote",
    "cancel_subscription",
    "charge",
    "consume_quota",
    "current_subscription",
    "find_entry",
    "grant",
    "ledger_entries",
    "pay_single",
    "quote_reply",
    "refund",
    "refundable",
    "release_quota",
    "set_subscription",
    "subscription_snapshot",
]
