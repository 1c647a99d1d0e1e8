"""Request-reply handlers without a server: decoding, error codes, registration."""

from __future__ import annotations

import logging
from typing import Any, cast

import msgspec
import pytest
from nats.aio.client import Client

from lumiku_bgremover.app import register_handlers
from lumiku_bgremover.contracts import (
    ContractError,
    ErrorReply,
    QuoteRequest,
    RejectCode,
    decode_reply,
    subjects,
)
from lumiku_bgremover.handlers.admin import ADMIN_QUEUE, ROUTES
from lumiku_bgremover.handlers.quotes import QUOTE_QUEUE, pricing_error, quote_responder
from lumiku_bgremover.handlers.replying import INTERNAL_ERROR_MESSAGE, respond
from lumiku_bgremover.handlers.requests import STATUS_QUEUE
from lumiku_bgremover.messaging import build_broker
from lumiku_bgremover.pricing import InvalidCount, PricingError, UnknownTier
from lumiku_bgremover.services import Services
from lumiku_bgremover.settings import NatsSettings, Settings


class Echo(msgspec.Struct, tag="ok", tag_field="status", frozen=True):
    user_id: str
    count: int


async def echo(request: QuoteRequest) -> Echo:
    return Echo(user_id=request.user_id, count=request.count)


async def answer(body: bytes | str, handler: Any = echo) -> Echo | ErrorReply:
    raw = body.encode() if isinstance(body, str) else body
    return decode_reply(Echo, await respond(QuoteRequest, raw, handler, subject="t.quote"))


async def test_a_valid_request_gets_the_handlers_reply() -> None:
    reply = await answer('{"user_id": "u1", "tier": "basic", "count": 3}')
    assert reply == Echo(user_id="u1", count=3)


@pytest.mark.parametrize(
    ("body", "code", "path"),
    [
        ("{oops", RejectCode.INVALID_REQUEST, None),
        ("", RejectCode.INVALID_REQUEST, None),
        ('"text"', RejectCode.INVALID_REQUEST, "$"),
        ('{"user_id": "u1", "tier": "gold", "count": 1}', RejectCode.UNKNOWN_TIER, "$.tier"),
        ('{"user_id": "u1", "tier": "basic", "count": 0}', RejectCode.INVALID_REQUEST, "$.count"),
        ('{"user_id": "u1", "tier": "basic", "count": 501}', RejectCode.TOO_MANY_IMAGES, "$.count"),
        ('{"user_id": "u1", "tier": "basic"}', RejectCode.INVALID_REQUEST, "$"),
        ('{"user_id": "u1", "tier": "basic", "count": 1, "y": 0}', RejectCode.INVALID_REQUEST, "$"),
    ],
)
async def test_bodies_breaking_the_contract_get_an_error_reply(
    body: str, code: RejectCode, path: str | None
) -> None:
    called: list[QuoteRequest] = []

    async def spy(request: QuoteRequest) -> Echo:
        called.append(request)
        return await echo(request)

    reply = await answer(body, spy)
    assert isinstance(reply, ErrorReply)
    assert (reply.code, reply.path) == (code, path)
    assert called == []


async def test_a_contract_error_raised_by_the_handler_is_answered_with_its_code() -> None:
    async def refuse(_: QuoteRequest) -> Echo:
        raise ContractError(RejectCode.NOT_FOUND, "no such thing", "$.user_id")

    reply = await answer('{"user_id": "u1", "tier": "basic", "count": 1}', refuse)
    assert reply == ErrorReply(code=RejectCode.NOT_FOUND, message="no such thing", path="$.user_id")


async def test_an_unexpected_error_is_logged_and_answered_internal_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def crash(_: QuoteRequest) -> Echo:
        raise RuntimeError("database on fire")

    with caplog.at_level(logging.ERROR):
        reply = await answer('{"user_id": "u1", "tier": "basic", "count": 1}', crash)
    assert reply == ErrorReply(code=RejectCode.INTERNAL_ERROR, message=INTERNAL_ERROR_MESSAGE)
    [record] = caplog.records
    assert record.getMessage() == "request on t.quote failed"
    assert record.exc_info is not None
    assert str(record.exc_info[1]) == "database on fire"


@pytest.mark.parametrize(
    ("error", "code", "path"),
    [
        (UnknownTier("gold"), RejectCode.UNKNOWN_TIER, "$.tier"),
        (InvalidCount(501, 500), RejectCode.TOO_MANY_IMAGES, "$.count"),
        (InvalidCount(101, 100), RejectCode.TOO_MANY_IMAGES, "$.count"),
        (InvalidCount(2, 1), RejectCode.TOO_MANY_IMAGES, "$.count"),
        (InvalidCount(0, 500), RejectCode.INVALID_REQUEST, "$.count"),
        (InvalidCount("3", 500), RejectCode.INVALID_REQUEST, "$.count"),
        (PricingError("something else"), RejectCode.INVALID_REQUEST, None),
    ],
)
def test_pricing_errors_map_to_codes(error: PricingError, code: RejectCode, path: str) -> None:
    mapped = pricing_error(error)
    assert (mapped.code, mapped.path) == (code, path)
    assert mapped.message == str(error)


def subscribed(settings: Settings) -> dict[str, str]:
    broker = build_broker(settings.nats)
    register_handlers(broker, settings)
    return {sub.subject.broker_address: sub.queue for sub in broker.subscribers}


#: What every service subscribes through FastStream: status in a queue group, requests by
#: consumer (quotes are a plain nats-py subscription: `app.plain_responders`).
SERVICE = {
    "t9.bgremove.batch.status": STATUS_QUEUE,
    "t9.bgremove.batch.requested": "",
    "t9.bgremove.image.requested": "",
    "t9.bgremove.batch.cancel": "",
    "t9.avatar.project.completed": "",
    "t9.pose.generated": "",
    "t9.upscaler.completed": "",
    "t9.bgremove.settings.get": "bgremove-settings",
    "t9.bgremove.settings.set": "bgremove-settings",
}


def test_quotes_are_answered_by_a_plain_responder_in_their_queue_group() -> None:
    settings = Settings(nats=NatsSettings(subject_prefix="t9."))
    services = Services(settings=settings, pool=cast("Any", None), store=cast("Any", None))
    responder = quote_responder(cast("Client", None), services)
    assert (responder.subject, responder.queue) == ("t9.bgremove.quote", QUOTE_QUEUE)


def test_admin_subjects_are_not_subscribed_by_default() -> None:
    settings = Settings(nats=NatsSettings(subject_prefix="t9."))
    assert subscribed(settings) == SERVICE


def test_admin_subjects_are_subscribed_when_enabled() -> None:
    settings = Settings(nats=NatsSettings(subject_prefix="t9."), admin_subjects_enabled=True)
    expected = {f"t9.{s}": ADMIN_QUEUE for s in subjects.ADMIN_SUBJECTS}
    assert subscribed(settings) == SERVICE | expected
    assert set(ROUTES) == set(subjects.ADMIN_SUBJECTS)


def test_routes_decode_the_registered_request_types() -> None:
    for subject, (kind, _) in ROUTES.items():
        assert subjects.contract_for(subject).messages == (kind,)
