"""`lumiku-bgremover quote`, `credits` and `subscription`, run as an operator runs them."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from lumiku_bgremover.contracts import (
    CreditGrantReply,
    ErrorReply,
    PricingType,
    QuoteReply,
    SubscriptionReply,
    decode_reply,
)
from lumiku_bgremover.settings import S3Settings
from tests.fixtures._common import free_port
from tests.integration.service import cli, service_environment, service_process

pytestmark = pytest.mark.integration


@pytest.fixture
def env(
    nats_url: str, nats_namespace: str, migrated_database_url: str, s3_settings: S3Settings
) -> dict[str, str]:
    return service_environment(nats_url, nats_namespace, migrated_database_url, s3_settings)


@pytest.fixture
def service(env: dict[str, str], tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    with service_process(env, tmp_path / "service.log") as process:
        yield process


def row(text: str, label: str, value: str) -> bool:
    """Whether `text` has the line `label` + spaces + `value` (the commands' row format)."""
    return re.search(rf"^{re.escape(label)} +{re.escape(value)}$", text, re.MULTILINE) is not None


def ok(*args: str, env: dict[str, str]) -> str:
    result = cli(*args, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


# --- credits (on the database) ---


def test_credits_grant_then_balance_and_a_safe_retry(env: dict[str, str]) -> None:
    assert ok("credits", "balance", "--user", "usr_a", env=env).strip() == "usr_a: 0 credits"

    first = ok("credits", "grant", "--user", "usr_a", "--amount", "500", env=env)
    assert re.search(r"^granted\s+500 credits to usr_a \(grant\), entry \d+$", first, re.MULTILINE)
    assert row(first, "balance", "500 credits")
    key = re.search(r"^idempotency key\s+(cli-grant-[0-9a-f]{32}) ", first, re.MULTILINE)
    assert key, first

    retry = ok("credits", "grant", "--user", "usr_a", "--amount", "500", "--key", key[1], env=env)
    assert "already granted earlier: nothing added" in retry
    assert ok("credits", "balance", "--user", "usr_a", env=env).strip() == "usr_a: 500 credits"

    more = ok(
        "credits", "grant", "--user", "usr_a", "--amount", "70", "--key", "k-2",
        "--reason", "purchase", "--json", env=env,
    )  # fmt: skip
    reply = decode_reply(CreditGrantReply, more)
    assert isinstance(reply, CreditGrantReply)
    assert (reply.amount, reply.reason, reply.balance, reply.replayed) == (
        70,
        "purchase",
        570,
        False,
    )
    balance = json.loads(ok("credits", "balance", "--user", "usr_a", "--json", env=env))
    assert balance == {"status": "ok", "user_id": "usr_a", "balance": 570}


def test_credits_refuses_a_reused_key_and_bad_arguments(env: dict[str, str]) -> None:
    ok("credits", "grant", "--user", "usr_b", "--amount", "5", "--key", "k-1", env=env)
    reused = cli("credits", "grant", "--user", "usr_b", "--amount", "6", "--key", "k-1", env=env)
    assert reused.returncode == 1
    assert "error invalid_request:" in reused.stderr
    assert "(at $.idempotency_key)" in reused.stderr

    zero = cli("credits", "grant", "--user", "usr_b", "--amount", "0", env=env)
    assert (zero.returncode, zero.stdout) == (2, "")
    assert "error invalid_request: Expected `int` >= 1 (at $.amount)" in zero.stderr
    bad_user = cli("credits", "balance", "--user", "a.b", env=env)
    assert bad_user.returncode == 2
    assert "(at $.user_id)" in bad_user.stderr
    assert ok("credits", "balance", "--user", "usr_b", env=env).strip() == "usr_b: 5 credits"


# --- subscriptions (on the database) ---


def test_subscription_set_then_show(env: dict[str, str]) -> None:
    none = ok("subscription", "show", "--user", "usr_s", env=env)
    assert none.strip() == "usr_s has no active subscription"

    made = ok("subscription", "set", "--user", "usr_s", "--plan", "pro", "--days", "7", env=env)
    assert row(made, "plan", "pro (active)"), made
    assert row(made, "tiers", "basic, standard, professional")
    assert row(made, "daily quota", "200")
    assert re.search(r"^today\s+\d{4}-\d\d-\d\d: 0 used, 200 left$", made, re.MULTILINE)
    assert row(made, "professional", "50 a day; 0 used, 50 left")
    assert "(Asia/Jakarta)" in made

    shown = decode_reply(
        SubscriptionReply, ok("subscription", "show", "--user", "usr_s", "--json", env=env)
    )
    assert isinstance(shown, SubscriptionReply)
    assert shown.subscription is not None
    assert (shown.subscription.plan, shown.quota_left) == ("pro", 200)
    days = (shown.subscription.expires_at - shown.subscription.started_at).days
    assert days == 7

    replaced = ok("subscription", "set", "--user", "usr_s", "--plan", "starter", env=env)
    assert row(replaced, "plan", "starter (active)")
    too_long = cli(
        "subscription", "set", "--user", "usr_s", "--plan", "pro", "--days", "400", env=env
    )
    assert too_long.returncode == 2
    assert "(at $.days)" in too_long.stderr


# --- quote (over NATS, against a running service) ---


def test_quote_against_a_running_service(
    service: subprocess.Popen[str], env: dict[str, str]
) -> None:
    ok("credits", "grant", "--user", "usr_q", "--amount", "400", env=env)

    text = ok("quote", "--user", "usr_q", "--tier", "standard", "--count", "50", env=env)
    assert row(text, "quote", "50 x standard (batch) for usr_q"), text
    assert row(text, "price", "8 credits x 50 = 400, discount 5% (-20)")
    assert row(text, "total", "380 credits (7.6 per image)")
    assert row(text, "balance", "400 credits (sufficient)")
    assert row(text, "accepted", "yes")

    raw = ok("quote", "--user", "usr_q", "--tier", "industry", "--count", "1",
             "--mode", "single", "--json", env=env)  # fmt: skip
    reply = decode_reply(QuoteReply, raw)
    assert isinstance(reply, QuoteReply)
    assert (reply.total, reply.pricing_type, reply.sufficient) == (25, PricingType.CREDITS, True)

    poor = ok("quote", "--user", "usr_poor", "--tier", "basic", "--count", "300", env=env)
    assert row(poor, "accepted", "no: insufficient_credits")


def test_quote_uses_a_subscription_set_from_the_cli(
    service: subprocess.Popen[str], env: dict[str, str]
) -> None:
    ok("subscription", "set", "--user", "usr_sub", "--plan", "starter", env=env)
    text = ok("quote", "--user", "usr_sub", "--tier", "basic", "--count", "1",
              "--mode", "single", env=env)  # fmt: skip
    assert row(text, "price", "0 credits: one unit of today's subscription quota")
    assert row(text, "paid by", "subscription")
    assert row(text, "quota today", "0 used, 50 left")


def test_quote_error_replies_exit_1(service: subprocess.Popen[str], env: dict[str, str]) -> None:
    zero = cli("quote", "--user", "usr_q", "--tier", "basic", "--count", "0", env=env)
    assert zero.returncode == 1
    assert zero.stderr.startswith("error invalid_request: ")
    assert "(at $.count)" in zero.stderr
    many = cli("quote", "--user", "usr_q", "--tier", "basic", "--count", "501", "--json", env=env)
    assert many.returncode == 1
    reply = decode_reply(QuoteReply, many.stdout)
    assert isinstance(reply, ErrorReply)
    assert reply.code == "too_many_images"


QUOTE_ARGS = ("quote", "--user", "u1", "--tier", "basic", "--count", "1", "--timeout", "0.5")


def test_quote_without_a_service_says_so(env: dict[str, str], nats_namespace: str) -> None:
    result = cli(*QUOTE_ARGS, env=env)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"no service answered on {nats_namespace}.bgremove.quote: is `lumiku-bgremover run` up?"
    )
    unreachable = cli(*QUOTE_ARGS, env={**env, "NATS_URL": f"nats://127.0.0.1:{free_port()}"})
    assert unreachable.returncode == 1
    assert unreachable.stderr.startswith("cannot reach NATS at nats://127.0.0.1:")


async def test_quote_with_a_silent_responder_times_out_cleanly(
    env: dict[str, str], nats_namespace: str, nc: Client
) -> None:
    heard: list[bytes] = []

    async def silent(msg: Msg) -> None:
        heard.append(msg.data)

    await nc.subscribe(f"{nats_namespace}.bgremove.quote", cb=silent)
    await nc.flush()
    started = time.monotonic()
    result = await asyncio.to_thread(cli, *QUOTE_ARGS, env=env)
    assert result.returncode == 1
    assert result.stderr.startswith(f"no service answered on {nats_namespace}.bgremove.quote")
    assert len(heard) == 1  # asked once, then waited out --timeout
    assert time.monotonic() - started < 30
