"""The credit ledger: balances, grants, charges and refunds, each exactly once per key.

Every balance change is one UPDATE of ``credit_accounts`` plus one ``credit_ledger``
row, in one transaction (a savepoint inside the caller's). Charges use a conditional
UPDATE (``balance >= amount``), so no interleaving can make a balance negative, and
the ledger's unique idempotency key makes a repeated request a replay of the first
entry. Callers run at READ COMMITTED (PostgreSQL's default): after a unique
violation the first writer's row must be visible to the next statement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import asyncpg

from lumiku_bgremover.billing._sql import is_unique_violation, require_key, require_positive
from lumiku_bgremover.billing.models import (
    CHARGE_REASONS,
    CREDIT_REASONS,
    IdempotencyConflict,
    InsufficientCredits,
    LedgerEntry,
    Reference,
)

if TYPE_CHECKING:
    from lumiku_bgremover.billing.models import Conn

__all__ = [
    "adjust",
    "balance",
    "charge",
    "find_entry",
    "grant",
    "ledger_entries",
    "refund",
    "refundable",
]

_KEY_CONSTRAINT: Final = "credit_ledger_idempotency_key_key"
_SELECT_SQL: Final = """
SELECT id, user_id, amount, balance_after, reason, reference_type, reference_id,
       idempotency_key, created_at
FROM credit_ledger
"""
_CREDIT_SQL: Final = """
INSERT INTO credit_accounts AS a (user_id, balance) VALUES ($1, $2)
ON CONFLICT (user_id) DO UPDATE SET balance = a.balance + EXCLUDED.balance
RETURNING balance
"""
_DEBIT_SQL: Final = """
UPDATE credit_accounts SET balance = balance - $2
WHERE user_id = $1 AND balance >= $2
RETURNING balance
"""
_INSERT_SQL: Final = """
INSERT INTO credit_ledger
    (user_id, amount, balance_after, reason, reference_type, reference_id, idempotency_key)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING id, user_id, amount, balance_after, reason, reference_type, reference_id,
          idempotency_key, created_at
"""
_REFUNDABLE_SQL: Final = """
SELECT COALESCE(-SUM(amount) FILTER (WHERE reason IN ('batch_charge', 'single_charge')), 0)
     - COALESCE(SUM(amount) FILTER (WHERE reason = 'refund'), 0)
FROM credit_ledger
WHERE user_id = $1 AND reference_type = $2 AND reference_id = $3
"""


@dataclass(frozen=True, slots=True)
class _Op:
    """One balance change as asked: ``amount`` signed; ``capped`` for refunds."""

    user_id: str
    amount: int
    reason: str
    reference: Reference | None
    key: str
    capped: bool = False


def _entry(row: asyncpg.Record, *, replayed: bool) -> LedgerEntry:
    ref_type, ref_id = row["reference_type"], row["reference_id"]
    reference = None if ref_type is None else Reference(str(ref_type), str(ref_id))
    return LedgerEntry(
        id=row["id"],
        user_id=row["user_id"],
        amount=row["amount"],
        balance_after=row["balance_after"],
        reason=row["reason"],
        reference=reference,
        idempotency_key=row["idempotency_key"],
        created_at=row["created_at"],
        replayed=replayed,
    )


async def find_entry(conn: Conn, idempotency_key: str) -> LedgerEntry | None:
    """The entry written for ``idempotency_key`` (``replayed=True``), or None."""
    row = await conn.fetchrow(_SELECT_SQL + "WHERE idempotency_key = $1", idempotency_key)
    return None if row is None else _entry(row, replayed=True)


def _check_same(entry: LedgerEntry, op: _Op) -> None:
    amount_ok = 0 < entry.amount <= op.amount if op.capped else entry.amount == op.amount
    same = (entry.user_id, entry.reason, entry.reference) == (op.user_id, op.reason, op.reference)
    if not (same and amount_ok):
        detail = (
            f"{entry.reason} of {entry.amount} for user {entry.user_id!r} "
            f"(reference {entry.reference}), not {op.reason} of {op.amount} "
            f"for user {op.user_id!r} (reference {op.reference})"
        )
        raise IdempotencyConflict(op.key, detail)


async def _replay(conn: Conn, op: _Op) -> LedgerEntry | None:
    entry = await find_entry(conn, op.key)
    if entry is not None:
        _check_same(entry, op)
    return entry


async def _move(conn: Conn, op: _Op) -> int | None:
    """New balance after applying ``op.amount``; None when a debit found too little."""
    sql, amount = (_CREDIT_SQL, op.amount) if op.amount > 0 else (_DEBIT_SQL, -op.amount)
    value: int | None = await conn.fetchval(sql, op.user_id, amount)
    return value


async def _write(conn: Conn, op: _Op) -> LedgerEntry | None:
    """Move the balance and write the entry in a savepoint; replay on a duplicate key."""
    ref = op.reference
    ref_type, ref_id = (None, None) if ref is None else (ref.type, ref.id)
    try:
        async with conn.transaction():
            new_balance = await _move(conn, op)
            if new_balance is None:
                return None
            row = await conn.fetchrow(
                _INSERT_SQL, op.user_id, op.amount, new_balance, op.reason, ref_type, ref_id, op.key
            )
    except asyncpg.UniqueViolationError as exc:
        if not is_unique_violation(exc, _KEY_CONSTRAINT):
            raise
        entry = await _replay(conn, op)
        if entry is None:
            raise
        return entry
    assert row is not None
    return _entry(row, replayed=False)


async def _post(conn: Conn, op: _Op) -> LedgerEntry | InsufficientCredits:
    async with conn.transaction():
        entry = await _replay(conn, op) or await _write(conn, op)
        if entry is not None:
            return entry
        # Too little: unless a twin with the same key committed while we waited.
        replayed = await _replay(conn, op)
        if replayed is not None:
            return replayed
        return InsufficientCredits(op.user_id, await balance(conn, op.user_id), -op.amount)


async def balance(conn: Conn, user_id: str) -> int:
    """The user's credit balance; 0 for a user never credited."""
    value = await conn.fetchval("SELECT balance FROM credit_accounts WHERE user_id = $1", user_id)
    return 0 if value is None else int(value)


async def grant(
    conn: Conn,
    user_id: str,
    amount: int,
    *,
    idempotency_key: str,
    reason: str = "grant",
    reference: Reference | None = None,
) -> LedgerEntry:
    """Add ``amount`` (> 0) credits; ``reason`` is grant, purchase or adjustment.

    To take credits away by hand use :func:`adjust`. A repeated key returns the first
    entry (``replayed=True``); the same key with another user, amount, reason or
    reference raises :class:`IdempotencyConflict`.
    """
    require_key(idempotency_key)
    require_positive(amount)
    if reason not in CREDIT_REASONS:
        raise ValueError(f"grant reason must be one of {sorted(CREDIT_REASONS)}, got {reason!r}")
    result = await _post(conn, _Op(user_id, amount, reason, reference, idempotency_key))
    assert isinstance(result, LedgerEntry)
    return result


async def adjust(
    conn: Conn,
    user_id: str,
    amount: int,
    *,
    idempotency_key: str,
    reference: Reference | None = None,
) -> LedgerEntry | InsufficientCredits:
    """A manual correction of ``amount`` credits, positive or negative (never 0).

    A negative adjustment larger than the balance is refused with
    :class:`InsufficientCredits` and writes nothing: balances never go below 0.
    """
    require_key(idempotency_key)
    if isinstance(amount, bool) or not isinstance(amount, int) or amount == 0:
        raise ValueError(f"amount must be a non-zero int, got {amount!r}")
    return await _post(conn, _Op(user_id, amount, "adjustment", reference, idempotency_key))


async def charge(
    conn: Conn,
    user_id: str,
    amount: int,
    *,
    idempotency_key: str,
    reason: str,
    reference: Reference,
) -> LedgerEntry | InsufficientCredits:
    """Take ``amount`` (> 0) credits for ``reference``; ``reason`` batch_charge or single_charge.

    Returns :class:`InsufficientCredits` (nothing written) when the balance is short.
    A repeated key returns the first entry with ``replayed=True`` and charges nothing,
    also when two transactions race with it; reusing it for another user, amount,
    reason or reference raises :class:`IdempotencyConflict`.
    """
    require_key(idempotency_key)
    require_positive(amount)
    if reason not in CHARGE_REASONS:
        raise ValueError(f"charge reason must be one of {sorted(CHARGE_REASONS)}, got {reason!r}")
    return await _post(conn, _Op(user_id, -amount, reason, reference, idempotency_key))


async def refundable(conn: Conn, user_id: str, reference: Reference) -> int:
    """Credits charged to ``user_id`` for ``reference`` and not yet refunded."""
    value = await conn.fetchval(_REFUNDABLE_SQL, user_id, reference.type, reference.id)
    return int(value)


async def refund(
    conn: Conn, user_id: str, amount: int, *, idempotency_key: str, reference: Reference
) -> LedgerEntry | None:
    """Give back up to ``amount`` (> 0) credits charged for ``reference``.

    Capped at what is still refundable (charged minus refunded for that reference and
    user), so refunds never exceed their charge; None when nothing is left. Refunds of
    one user are serialised by locking the account row. A repeated key returns the
    first entry (whose amount may be the capped one) and refunds nothing more.
    """
    require_key(idempotency_key)
    require_positive(amount)
    op = _Op(user_id, amount, "refund", reference, idempotency_key, capped=True)
    async with conn.transaction():
        await conn.execute("SELECT 1 FROM credit_accounts WHERE user_id = $1 FOR UPDATE", user_id)
        replayed = await _replay(conn, op)
        if replayed is not None:
            return replayed
        left = await refundable(conn, user_id, reference)
        if left <= 0:
            return None
        capped = _Op(user_id, min(amount, left), "refund", reference, idempotency_key, capped=True)
        return await _write(conn, capped)


async def ledger_entries(conn: Conn, user_id: str, *, limit: int = 100) -> list[LedgerEntry]:
    """The user's newest ``limit`` entries, newest first (``replayed`` False)."""
    require_positive(limit, "limit")
    rows = await conn.fetch(
        _SELECT_SQL + "WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2",
        user_id,
        limit,
    )
    return [_entry(row, replayed=False) for row in rows]
