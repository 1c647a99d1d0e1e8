"""The admin subjects: silent by default, answering when enabled (real NATS + PostgreSQL)."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest
from nats.aio.client import Client
from nats.errors import NoRespondersError

from lumiku_bgremover.contracts import (
    CreditBalanceReply,
    CreditGrantReply,
    ErrorReply,
    Plan,
    RejectCode,
    SubscriptionReply,
    Tier,
    decode_reply,
)
from lumiku_bgremover.contracts.subjects import (
    ADMIN_CREDITS_BALANCE,
    ADMIN_CREDITS_GRANT,
    ADMIN_SUBJECTS,
    ADMIN_SUBSCRIPTION_SET,
    ADMIN_SUBSCRIPTION_SHOW,
    QUOTE,
)
from lumiku_bgremover.settings import S3Settings
from tests.integration.service import PINNED_NOW, running_app, service_settings

pytestmark = pytest.mark.integration

TIMEOUT_S = 3.0


async def request(nc: Client, namespace: str, subject: str, body: object) -> bytes:
    msg = await nc.request(f"{namespace}.{subject}", json.dumps(body).encode(), timeout=TIMEOUT_S)
    return msg.data


async def test_admin_subjects_are_silent_by_default(
    nc: Client,
    nats_url: str,
    nats_namespace: str,
    migrated_database_url: str,
    s3_settings: S3Settings,
) -> None:
    settings = service_settings(nats_url, nats_namespace, migrated_database_url, s3_settings)
    assert settings.admin_subjects_enabled is False
    async with running_app(settings):
        # the service is up: the quote subject answers ...
        quote = {"user_id": "u1", "tier": "basic", "count": 1}
        assert await request(nc, nats_namespace, QUOTE, quote)
        # ... but nobody subscribes to the admin subjects
        for subject in ADMIN_SUBJECTS:
            with pytest.raises(NoRespondersError):
                await request(nc, nats_namespace, subject, {"user_id": "u1"})


async def test_admin_subjects_grant_balance_set_and_show_when_enabled(
    nc: Client,
    nats_url: str,
    nats_namespace: str,
    migrated_database_url: str,
    s3_settings: S3Settings,
) -> None:
    settings = service_settings(
        nats_url, nats_namespace, migrated_database_url, s3_settings, admin=True
    )
    ns = nats_namespace
    async with running_app(settings):
        before = decode_reply(
            CreditBalanceReply, await request(nc, ns, ADMIN_CREDITS_BALANCE, {"user_id": "u1"})
        )
        assert before == CreditBalanceReply(user_id="u1", balance=0)

        grant = {"user_id": "u1", "amount": 250, "idempotency_key": "g-1", "reason": "purchase"}
        first = decode_reply(CreditGrantReply, await request(nc, ns, ADMIN_CREDITS_GRANT, grant))
        assert isinstance(first, CreditGrantReply), first
        assert (first.amount, first.balance_after, first.balance, first.replayed) == (
            250, 250, 250, False,
        )  # fmt: skip
        again = decode_reply(CreditGrantReply, await request(nc, ns, ADMIN_CREDITS_GRANT, grant))
        assert isinstance(again, CreditGrantReply)
        assert (again.entry_id, again.balance, again.replayed) == (first.entry_id, 250, True)

        other = {**grant, "amount": 999}
        conflict = decode_reply(CreditGrantReply, await request(nc, ns, ADMIN_CREDITS_GRANT, other))
        assert isinstance(conflict, ErrorReply)
        assert (conflict.code, conflict.path) == (RejectCode.INVALID_REQUEST, "$.idempotency_key")

        after = decode_reply(
            CreditBalanceReply, await request(nc, ns, ADMIN_CREDITS_BALANCE, {"user_id": "u1"})
        )
        assert after == CreditBalanceReply(user_id="u1", balance=250)

        none = decode_reply(
            SubscriptionReply, await request(nc, ns, ADMIN_SUBSCRIPTION_SHOW, {"user_id": "u1"})
        )
        assert isinstance(none, SubscriptionReply)
        assert (none.subscription, none.quota_left) == (None, None)

        put = {"user_id": "u1", "plan": "pro", "days": 30}
        made = decode_reply(SubscriptionReply, await request(nc, ns, ADMIN_SUBSCRIPTION_SET, put))
        assert isinstance(made, SubscriptionReply), made
        shown = decode_reply(
            SubscriptionReply, await request(nc, ns, ADMIN_SUBSCRIPTION_SHOW, {"user_id": "u1"})
        )
    assert shown == made
    assert isinstance(shown, SubscriptionReply)
    sub = shown.subscription
    assert sub is not None
    assert (sub.plan, sub.status, sub.daily_quota, sub.professional_quota) == (
        Plan.PRO, "active", 200, 50,
    )  # fmt: skip
    assert sub.allowed_tiers == (Tier.BASIC, Tier.STANDARD, Tier.PROFESSIONAL)
    assert (sub.started_at, sub.expires_at) == (PINNED_NOW, PINNED_NOW + timedelta(days=30))
    assert shown.business_date == date(2025, 1, 31)  # 15:15 in Jakarta
    assert (shown.quota_used, shown.quota_left) == (0, 200)
    assert (shown.professional_used, shown.professional_left) == (0, 50)


async def test_admin_requests_breaking_the_contract_get_error_replies(
    nc: Client,
    nats_url: str,
    nats_namespace: str,
    migrated_database_url: str,
    s3_settings: S3Settings,
) -> None:
    settings = service_settings(
        nats_url, nats_namespace, migrated_database_url, s3_settings, admin=True
    )
    cases = [
        (ADMIN_CREDITS_GRANT, {"user_id": "u1", "amount": 0, "idempotency_key": "k"}, "$.amount"),
        (ADMIN_CREDITS_GRANT, {"user_id": "u1", "amount": 5}, "$"),
        (ADMIN_SUBSCRIPTION_SET, {"user_id": "u1", "plan": "gold", "days": 3}, "$.plan"),
        (ADMIN_SUBSCRIPTION_SET, {"user_id": "u1", "plan": "pro"}, "$"),
        (ADMIN_SUBSCRIPTION_SET, {"user_id": "u1", "plan": "pro", "days": 367}, "$.days"),
        (
            ADMIN_SUBSCRIPTION_SET,
            {"user_id": "u1", "plan": "pro", "expires_at": "2025-01-01T00:00:00Z"},
            "$.expires_at",
        ),
        (ADMIN_CREDITS_BALANCE, {"user": "u1"}, "$"),
    ]
    async with running_app(settings):
        for subject, body, path in cases:
            reply = decode_reply(
                CreditBalanceReply, await request(nc, nats_namespace, subject, body)
            )
            assert isinstance(reply, ErrorReply), (subject, body)
            assert (reply.code, reply.path) == (RejectCode.INVALID_REQUEST, path), (subject, body)
