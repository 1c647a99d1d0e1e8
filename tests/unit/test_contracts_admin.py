"""Admin contracts: what the operator subjects accept and refuse."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lumiku_bgremover.billing.models import CREDIT_REASONS
from lumiku_bgremover.contracts import (
    ContractError,
    CreditBalanceReply,
    CreditGrantRequest,
    ErrorReply,
    GrantReason,
    RejectCode,
    SubscriptionSetRequest,
    decode,
    decode_reply,
)
from lumiku_bgremover.contracts.admin import MAX_GRANT, MAX_SUBSCRIPTION_DAYS


def raw(body: dict[str, Any]) -> str:
    return json.dumps(body)


def test_grant_reasons_are_the_ledgers_crediting_reasons() -> None:
    assert {r.value for r in GrantReason} == set(CREDIT_REASONS)


@pytest.mark.parametrize(
    ("amount", "ok"),
    [(0, False), (1, True), (MAX_GRANT, True), (MAX_GRANT + 1, False), (-5, False)],
)
def test_grant_amount_bounds(amount: int, *, ok: bool) -> None:
    body = raw({"user_id": "u", "amount": amount, "idempotency_key": "k"})
    if ok:
        assert decode(CreditGrantRequest, body).reason is GrantReason.GRANT
    else:
        with pytest.raises(ContractError) as caught:
            decode(CreditGrantRequest, body)
        assert caught.value.path == "$.amount"


def test_grant_refuses_ledger_only_reasons() -> None:
    body = raw({"user_id": "u", "amount": 1, "idempotency_key": "k", "reason": "refund"})
    with pytest.raises(ContractError) as caught:
        decode(CreditGrantRequest, body)
    assert (caught.value.code, caught.value.path) == (RejectCode.INVALID_REQUEST, "$.reason")


@pytest.mark.parametrize(
    ("extra", "path"),
    [
        ({}, "$"),
        ({"days": 3, "expires_at": "2030-01-01T00:00:00Z"}, "$"),
        ({"days": 0}, "$.days"),
        ({"days": MAX_SUBSCRIPTION_DAYS + 1}, "$.days"),
        ({"expires_at": "2030-01-01T00:00:00"}, "$.expires_at"),  # no offset
    ],
)
def test_subscription_set_needs_days_or_an_aware_expiry(extra: dict[str, Any], path: str) -> None:
    with pytest.raises(ContractError) as caught:
        decode(SubscriptionSetRequest, raw({"user_id": "u", "plan": "pro", **extra}))
    assert (caught.value.code, caught.value.path) == (RejectCode.INVALID_REQUEST, path)


def test_subscription_set_accepts_either_form() -> None:
    days = decode(SubscriptionSetRequest, raw({"user_id": "u", "plan": "starter", "days": 366}))
    assert (days.days, days.expires_at) == (366, None)
    until = raw({"user_id": "u", "plan": "pro", "expires_at": "2030-01-01T00:00:00+07:00"})
    assert decode(SubscriptionSetRequest, until).days is None


def test_admin_replies_are_tagged_like_every_reply() -> None:
    assert decode_reply(CreditBalanceReply, '{"status": "ok", "user_id": "u", "balance": 3}') == (
        CreditBalanceReply(user_id="u", balance=3)
    )
    error = '{"status": "error", "code": "invalid_request", "message": "m"}'
    assert isinstance(decode_reply(CreditBalanceReply, error), ErrorReply)
