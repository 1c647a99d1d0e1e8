"""Small helpers shared by the billing modules: argument checks, locks, unique violations."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

import asyncpg

if TYPE_CHECKING:
    from lumiku_bgremover.billing.models import Conn


class LockSpace(enum.IntEnum):
    """First key of the two-key transaction advisory locks the billing layer takes.

    The two-int form never collides with the one-bigint form the migrator uses.
    """

    SUBSCRIPTION_USER = 0x4C42_0001  # set_subscription, per user
    SINGLE_PAYMENT = 0x4C42_0002  # pay_single, per idempotency key


async def xact_lock(conn: Conn, space: LockSpace, name: str) -> None:
    """Hold an advisory lock on (space, hashtext(name)) until the transaction ends."""
    await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", int(space), name)


def is_unique_violation(exc: asyncpg.UniqueViolationError, constraint: str) -> bool:
    """Whether ``exc`` was raised by the unique constraint or index named ``constraint``."""
    return exc.constraint_name == constraint


def require_key(key: str) -> None:
    """Idempotency keys are required, non-empty strings."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"idempotency_key must be a non-empty string, got {key!r}")


def require_positive(amount: int, name: str = "amount") -> None:
    """Credits are whole numbers; most operations need more than zero of them."""
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise ValueError(f"{name} must be a positive int, got {amount!r}")
