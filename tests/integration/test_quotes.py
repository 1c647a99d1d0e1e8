"""The quote subject, answered by the real app over a real NATS server and PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
import msgspec
import pytest
import pytest_asyncio
from nats.aio.client import Client
from nats.aio.msg import Msg

from lumiku_bgremover import billing
from lumiku_bgremover.contracts import (
    ErrorReply,
    Plan,
    PricingType,
    QuoteReply,
    RejectCode,
    decode_reply,
)
from lumiku_bgremover.contracts.subjects import QUOTE, with_prefix
from lumiku_bgremover.settings import Limits, S3Settings, Settings
from tests.integration.service import PINNED_NOW, running_app, service_settings

pytestmark = pytest.mark.integration

#: A request that gets no answer within this many seconds counts as a timeout.
ANSWER_WITHIN_S = 3.0


@pytest.fixture
def settings(
    nats_url: str, nats_namespace: str, migrated_database_url: str, s3_settings: S3Settings
) -> Settings:
    return service_settings(nats_url, nats_namespace, migrated_database_url, s3_settings)


@pytest_asyncio.fixture
async def service(settings: Settings) -> AsyncIterator[None]:
    async with running_app(settings):
        yield


@pytest.fixture
def subject(nats_namespace: str) -> str:
    return with_prefix(f"{nats_namespace}.", QUOTE)


async def ask(nc: Client, subject: str, body: object) -> QuoteReply | ErrorReply:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    msg = await nc.request(subject, raw, timeout=ANSWER_WITHIN_S)
    return decode_reply(QuoteReply, msg.data)


async def ok(nc: Client, subject: str, body: object) -> QuoteReply:
    reply = await ask(nc, subject, body)
    assert isinstance(reply, QuoteReply), reply
    return reply


async def grant(pool: asyncpg.Pool, user: str, amount: int) -> None:
    async with pool.acquire() as conn:
        await billing.grant(conn, user, amount, idempotency_key=f"seed-{user}-{amount}")


async def subscribe(pool: asyncpg.Pool, user: str, plan: Plan) -> None:
    async with pool.acquire() as conn:
        await billing.set_subscription(
            conn, user, plan, started_at=PINNED_NOW, expires_at=PINNED_NOW + timedelta(days=30)
        )


# --- the spec's examples ---


@dataclass(frozen=True)
class Example:
    tier: str
    count: int
    mode: str
    base: int
    pct: int
    total: int
    per_image: str


SPEC_EXAMPLES = [
    Example("standard", 19, "batch", 152, 0, 152, "8"),
    Example("standard", 50, "batch", 400, 5, 380, "7.6"),
    Example("basic", 300, "batch", 900, 20, 720, "2.4"),
    Example("industry", 1, "single", 25, 0, 25, "25"),
]


@pytest.mark.parametrize("example", SPEC_EXAMPLES, ids=lambda e: f"{e.tier}-{e.count}-{e.mode}")
async def test_quote_answers_the_spec_examples(
    service: None, db_pool: asyncpg.Pool, nc: Client, subject: str, example: Example
) -> None:
    await grant(db_pool, "usr_rich", 1000)
    body = {"user_id": "usr_rich", "tier": example.tier, "count": example.count}
    reply = await ok(nc, subject, body | {"mode": example.mode})
    assert (reply.tier, reply.count, reply.mode) == (example.tier, example.count, example.mode)
    assert (reply.base_total, reply.discount_pct) == (example.base, example.pct)
    assert (reply.total, reply.discount) == (example.total, example.base - example.total)
    assert reply.per_image == example.per_image
    assert reply.pricing_type is PricingType.CREDITS
    assert (reply.balance, reply.sufficient, reply.accepted, reply.reason) == (
        1000,
        True,
        True,
        None,
    )
    assert (reply.quota_used, reply.quota_left) == (None, None)


async def test_quote_reports_an_insufficient_balance(
    service: None, db_pool: asyncpg.Pool, nc: Client, subject: str
) -> None:
    await grant(db_pool, "usr_poor", 379)
    reply = await ok(nc, subject, {"user_id": "usr_poor", "tier": "standard", "count": 50})
    assert (reply.total, reply.balance) == (380, 379)
    assert (reply.sufficient, reply.accepted) == (False, False)
    assert reply.reason is RejectCode.INSUFFICIENT_CREDITS
    unknown = await ok(nc, subject, {"user_id": "usr_never_seen", "tier": "basic", "count": 1})
    assert (unknown.balance, unknown.sufficient) == (0, False)


async def test_quote_uses_the_subscription_for_a_covered_single(
    service: None, db_pool: asyncpg.Pool, nc: Client, subject: str
) -> None:
    await subscribe(db_pool, "usr_starter", Plan.STARTER)
    single = {"user_id": "usr_starter", "tier": "basic", "count": 1, "mode": "single"}
    reply = await ok(nc, subject, single)
    assert reply.pricing_type is PricingType.SUBSCRIPTION
    assert (reply.total, reply.quota_used, reply.quota_left) == (0, 0, 50)
    assert (reply.balance, reply.sufficient, reply.accepted) == (0, True, True)
    # starter does not cover professional: credits, and the user has none
    pro = await ok(nc, subject, {**single, "tier": "professional"})
    assert (pro.pricing_type, pro.total, pro.sufficient) == (PricingType.CREDITS, 15, False)
    assert (pro.quota_used, pro.quota_left) == (0, 50)
    # a batch is always paid in credits, even with quota left
    batch = await ok(nc, subject, {**single, "mode": "batch", "count": 2})
    assert (batch.pricing_type, batch.total) == (PricingType.CREDITS, 6)


# --- bad requests: always an ErrorReply with a code, never a timeout ---


@pytest.mark.parametrize(
    "case",
    [
        (b"{not json", RejectCode.INVALID_REQUEST, None),
        (b"", RejectCode.INVALID_REQUEST, None),
        (b"[1, 2]", RejectCode.INVALID_REQUEST, "$"),
        ({"user_id": "u1", "tier": "gold", "count": 1}, RejectCode.UNKNOWN_TIER, "$.tier"),
        ({"user_id": "u1", "tier": "basic", "count": 0}, RejectCode.INVALID_REQUEST, "$.count"),
        ({"user_id": "u1", "tier": "basic", "count": 501}, RejectCode.TOO_MANY_IMAGES, "$.count"),
        ({"user_id": "u1", "tier": "basic", "count": "3"}, RejectCode.INVALID_REQUEST, "$.count"),
        ({"tier": "basic", "count": 1}, RejectCode.INVALID_REQUEST, "$"),
        ({"user_id": "u1", "tier": "basic", "count": 1, "x": 1}, RejectCode.INVALID_REQUEST, "$"),
        ({"user_id": "a.b", "tier": "basic", "count": 1}, RejectCode.INVALID_REQUEST, "$.user_id"),
        (
            {"user_id": "u1", "tier": "basic", "count": 2, "mode": "single"},
            RejectCode.TOO_MANY_IMAGES,
            "$.count",
        ),
    ],
    ids=[
        "malformed",
        "empty",
        "not-an-object",
        "unknown-tier",
        "count-0",
        "count-501",
        "count-text",
        "no-user",
        "unknown-field",
        "bad-user-id",
        "single-of-two",
    ],
)
async def test_bad_requests_get_an_error_reply_with_a_code(
    service: None, nc: Client, subject: str, case: tuple[object, RejectCode, str | None]
) -> None:
    body, code, path = case
    reply = await ask(nc, subject, body)
    assert isinstance(reply, ErrorReply), reply
    assert reply.code is code
    assert reply.path == path
    assert reply.message
    # the service is still answering afterwards
    assert isinstance(
        await ask(nc, subject, {"user_id": "u1", "tier": "basic", "count": 1}), QuoteReply
    )


async def test_a_lower_image_limit_from_the_settings_is_applied(
    settings: Settings, nc: Client, subject: str
) -> None:
    limited = dataclasses.replace(settings, limits=Limits(max_images=100))
    async with running_app(limited):
        at_limit = await ask(nc, subject, {"user_id": "u1", "tier": "basic", "count": 100})
        over = await ask(nc, subject, {"user_id": "u1", "tier": "basic", "count": 101})
    assert isinstance(at_limit, QuoteReply)
    assert at_limit.total == 270
    assert isinstance(over, ErrorReply)
    assert (over.code, over.path) == (RejectCode.TOO_MANY_IMAGES, "$.count")
    assert "1..100" in over.message


async def test_a_failing_dependency_answers_internal_error_not_a_timeout(
    settings: Settings, nc: Client, subject: str, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_clock() -> datetime:
        raise RuntimeError("clock is broken")

    async with running_app(settings, clock=broken_clock):
        reply = await ask(nc, subject, {"user_id": "u1", "tier": "basic", "count": 1})
    assert isinstance(reply, ErrorReply)
    assert reply.code is RejectCode.INTERNAL_ERROR
    assert "clock is broken" not in reply.message  # details stay in the log
    logged = [r for r in caplog.records if r.name == "lumiku_bgremover.handlers.replying"]
    assert [str(r.exc_info[1]) for r in logged if r.exc_info] == ["clock is broken"]
    assert QUOTE in logged[0].getMessage()


# --- replicas share the subject in one queue group ---


async def collect(nc: Client, subject: str, bodies: list[bytes], settle_s: float) -> list[Msg]:
    """Publish every body with one shared reply inbox; return every reply that came back."""
    inbox = nc.new_inbox()
    replies: list[Msg] = []
    all_in = asyncio.Event()

    async def keep(msg: Msg) -> None:
        replies.append(msg)
        if len(replies) >= len(bodies):
            all_in.set()

    sub = await nc.subscribe(inbox, cb=keep)
    for body in bodies:
        await nc.publish(subject, body, reply=inbox)
    await asyncio.wait_for(all_in.wait(), timeout=10)
    await asyncio.sleep(settle_s)  # room for any duplicate to arrive
    await sub.unsubscribe()
    return replies


def counting_clock(calls: list[int]) -> Callable[[], datetime]:
    def clock() -> datetime:
        calls.append(1)
        return PINNED_NOW

    return clock


async def test_two_replicas_share_the_load_and_answer_each_request_once(
    settings: Settings, nc: Client, subject: str
) -> None:
    first: list[int] = []
    second: list[int] = []
    async with (
        running_app(settings, clock=counting_clock(first)),
        running_app(settings, clock=counting_clock(second)),
    ):
        bodies = [
            msgspec.json.encode({"user_id": "usr_q", "tier": "basic", "count": n})
            for n in range(1, 61)
        ]
        replies = await collect(nc, subject, bodies, settle_s=0.5)
    counts = sorted(
        reply.count
        for reply in (decode_reply(QuoteReply, m.data) for m in replies)
        if isinstance(reply, QuoteReply)
    )
    assert counts == list(range(1, 61)), "every request answered exactly once"
    assert len(replies) == 60
    assert len(first) + len(second) == 60
    assert first, "the first replica answered some"
    assert second, "the second replica answered some"
