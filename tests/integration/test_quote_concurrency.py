"""The quote subscriber answers requests concurrently and writes no INFO line per message."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import fast_depends.utils
import pytest
import pytest_asyncio

from lumiku_bgremover.contracts.subjects import QUOTE, with_prefix
from lumiku_bgremover.handlers import quotes
from lumiku_bgremover.messaging import BROKER_LOGGER
from lumiku_bgremover.settings import S3Settings, Settings
from tests.fixtures.nats import connect
from tests.integration.service import running_app, service_settings

pytestmark = pytest.mark.integration

#: Requests held open together: each waits until all of them have arrived.
TOGETHER = 8
GATED = b"gated"


class Gate:
    """Holds every gated request until `TOGETHER` of them are being handled at once."""

    def __init__(self) -> None:
        self.arrived = 0
        self.all_in = asyncio.Event()

    async def answer(self, body: bytes) -> bytes:
        self.arrived += 1
        if self.arrived >= TOGETHER:
            self.all_in.set()
        await asyncio.wait_for(self.all_in.wait(), 5.0)
        return b"ok"


@pytest_asyncio.fixture
async def gate(
    monkeypatch: pytest.MonkeyPatch,
    nats_url: str,
    nats_namespace: str,
    migrated_database_url: str,
    s3_settings: S3Settings,
) -> AsyncIterator[tuple[Gate, Settings]]:
    held = Gate()
    original = quotes.answer_quote

    async def answer(services: object, body: bytes) -> bytes:
        if body == GATED:
            return await held.answer(body)
        return await original(services, body)  # type: ignore[arg-type]

    monkeypatch.setattr(quotes, "answer_quote", answer)
    settings = service_settings(nats_url, nats_namespace, migrated_database_url, s3_settings)
    async with running_app(settings):
        yield held, settings


async def test_quotes_are_handled_concurrently(
    gate: tuple[Gate, Settings], caplog: pytest.LogCaptureFixture
) -> None:
    held, settings = gate
    subject = with_prefix(settings.nats.subject_prefix, QUOTE)
    nc = await connect(settings.nats.servers[0])
    caplog.set_level(logging.INFO, logger=BROKER_LOGGER)
    try:
        replies = await asyncio.gather(
            *(nc.request(subject, GATED, timeout=8.0) for _ in range(TOGETHER))
        )
    finally:
        await nc.close()
    assert [reply.data for reply in replies] == [b"ok"] * TOGETHER
    assert held.arrived == TOGETHER
    per_message = [r for r in caplog.records if r.getMessage() in {"Received", "Processed"}]
    assert per_message == []


async def test_a_quote_takes_no_worker_thread(
    gate: tuple[Gate, Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """FastStream `Context` parameters are resolved in a worker thread per message;
    the quote handler has none, so answering a quote stays on the event loop."""
    _, settings = gate
    hops: list[object] = []
    original = fast_depends.utils.run_in_threadpool

    async def counted(func: object, *args: object, **kwargs: object) -> object:
        hops.append(func)
        return await original(func, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(fast_depends.utils, "run_in_threadpool", counted)
    subject = with_prefix(settings.nats.subject_prefix, QUOTE)
    nc = await connect(settings.nats.servers[0])
    body = b'{"user_id": "u1", "tier": "basic", "count": 3}'
    try:
        replies = [await nc.request(subject, body, timeout=5.0) for _ in range(5)]
    finally:
        await nc.close()
    assert all(b'"total":9' in reply.data for reply in replies)
    assert hops == []
