"""`PlainResponder` on a real nats-server: answers, errors, queue group, bound, stop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import msgspec
import pytest
import pytest_asyncio
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry

from lumiku_bgremover.contracts import ErrorReply, RejectCode
from lumiku_bgremover.handlers.plain import PlainResponder
from lumiku_bgremover.observability import Metrics
from lumiku_bgremover.observability.tracing import Tracing
from tests.fixtures.nats import connect

pytestmark = pytest.mark.integration

#: Seconds a request waits for its answer before the test fails.
ANSWER_WITHIN_S = 5.0
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"

#: Requests refused with "no responders" before a test gives up on a new subscription.
RETRIES = 1000

Answer = Callable[[bytes], Awaitable[bytes]]


async def echo(body: bytes) -> bytes:
    return b"echo:" + body


@pytest_asyncio.fixture
async def server_nc(nats_url: str) -> AsyncIterator[Client]:
    """The responders' own connection (as in the service)."""
    client = await connect(nats_url)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def subject(nats_namespace: str) -> str:
    return f"{nats_namespace}.plain.ask"


#: Rounds of 20 requests within which a queue group of two has surely used both members.
ROUNDS = 10


async def ask(nc: Client, subject: str, body: bytes, **options: object) -> Msg:
    """`nc.request`, sent again while the server still answers "no responders": a new
    subscription can take a moment to reach every connection's view, and a request the
    server refused reached no responder (so nothing is counted twice)."""
    for _ in range(RETRIES):
        try:
            return await nc.request(subject, body, timeout=ANSWER_WITHIN_S, **options)  # type: ignore[arg-type]
        except NoRespondersError:
            continue
    raise NoRespondersError


async def started(nc: Client, subject: str, answer: Answer, **options: object) -> PlainResponder:
    responder = PlainResponder(nc, subject, "plain-test", answer, **options)  # type: ignore[arg-type]
    await responder.start()
    await nc.flush()
    return responder


async def test_it_answers_with_the_answers_bytes_and_counts_and_traces_each_request(
    server_nc: Client, nc: Client, subject: str
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    metrics = Metrics(CollectorRegistry())
    responder = await started(
        server_nc, subject, echo, limit=4, tracing=Tracing(provider), counter=metrics.replies
    )
    try:
        first = await ask(nc, subject, b"one")
        second = await ask(nc, subject, b"two", headers={"traceparent": TRACEPARENT})
    finally:
        await responder.stop()
    assert (first.data, second.data) == (b"echo:one", b"echo:two")
    counted = metrics.registry.get_sample_value(
        "lumiku_bgremover_replies_total", {"subject": subject}
    )
    assert counted == 2
    spans = exporter.get_finished_spans()
    assert [(span.name, span.kind) for span in spans] == [(subject, SpanKind.SERVER)] * 2
    assert f"{spans[1].context.trace_id:032x}" == TRACE_ID
    assert f"{spans[0].context.trace_id:032x}" != TRACE_ID
    provider.shutdown()


async def test_an_answer_that_raises_is_answered_internal_error_and_logged(
    server_nc: Client, nc: Client, subject: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(body: bytes) -> bytes:
        raise RuntimeError("database is on fire")

    responder = await started(server_nc, subject, broken, limit=2)
    try:
        reply = await ask(nc, subject, b"{}")
        after = await ask(nc, subject, b"{}")  # still serving
    finally:
        await responder.stop()
    error = msgspec.json.decode(reply.data, type=ErrorReply)
    assert error.code is RejectCode.INTERNAL_ERROR
    assert "fire" not in error.message
    assert after.data == reply.data
    failures = [r for r in caplog.records if r.name == "lumiku_bgremover.handlers.plain"]
    assert [str(r.exc_info[1]) for r in failures if r.exc_info] == ["database is on fire"] * 2
    assert all(subject in r.getMessage() for r in failures)


async def test_two_responders_in_the_queue_group_answer_each_request_once(
    server_nc: Client, nats_url: str, nc: Client, subject: str
) -> None:
    other_nc = await connect(nats_url)
    seen: dict[str, list[bytes]] = {"first": [], "second": []}

    def recording(name: str) -> Answer:
        async def answer(body: bytes) -> bytes:
            seen[name].append(body)
            return name.encode()

        return answer

    first = await started(server_nc, subject, recording("first"), limit=8)
    second = await started(other_nc, subject, recording("second"), limit=8)
    bodies: list[bytes] = []
    replies: list[Msg] = []
    try:  # rounds of 20 until the server has picked each member (it picks at random)
        for _ in range(ROUNDS):
            batch = [str(n).encode() for n in range(len(bodies), len(bodies) + 20)]
            bodies += batch
            replies += await asyncio.gather(*(ask(nc, subject, body) for body in batch))
            if seen["first"] and seen["second"]:
                break
    finally:
        await first.stop()
        await second.stop()
        await other_nc.close()
    assert sorted(seen["first"] + seen["second"], key=int) == bodies
    assert seen["first"], "the first responder answered some"
    assert seen["second"], "the second responder answered some"
    assert sorted(r.data for r in replies) == sorted(
        [b"first"] * len(seen["first"]) + [b"second"] * len(seen["second"])
    )


class Gate:
    """Holds every answer until released; records how many ran at once."""

    def __init__(self, full_at: int) -> None:
        self.running = 0
        self.most = 0
        self.full_at = full_at
        self.full = asyncio.Event()
        self.release = asyncio.Event()

    async def answer(self, body: bytes) -> bytes:
        self.running += 1
        self.most = max(self.most, self.running)
        if self.running >= self.full_at:
            self.full.set()
        await self.release.wait()
        self.running -= 1
        return body


async def test_no_more_than_the_limit_run_at_once(
    server_nc: Client, nc: Client, subject: str
) -> None:
    gate = Gate(full_at=2)
    responder = await started(server_nc, subject, gate.answer, limit=2)
    try:
        asks = [asyncio.create_task(ask(nc, subject, str(n).encode())) for n in range(6)]
        await asyncio.wait_for(gate.full.wait(), ANSWER_WITHIN_S)
        await nc.flush()
        await server_nc.flush()  # every request has reached the responder's connection
        assert gate.running == 2
        gate.release.set()
        replies = await asyncio.gather(*asks)
    finally:
        await responder.stop()
    assert sorted(r.data for r in replies) == [str(n).encode() for n in range(6)]
    assert gate.most == 2


async def test_stop_finishes_the_answers_in_flight_then_nobody_responds(
    server_nc: Client, nc: Client, subject: str
) -> None:
    gate = Gate(full_at=1)
    responder = await started(server_nc, subject, gate.answer, limit=4)
    late = asyncio.create_task(ask(nc, subject, b"late"))
    await asyncio.wait_for(gate.full.wait(), ANSWER_WITHIN_S)
    stopping = asyncio.create_task(responder.stop())
    await server_nc.flush()  # the unsubscribe has reached the server
    assert not stopping.done()  # waiting for the answer in flight
    gate.release.set()
    await stopping
    assert (await late).data == b"late"
    await server_nc.flush()  # the server has processed the unsubscribe
    with pytest.raises(NoRespondersError):
        await nc.request(subject, b"again", timeout=ANSWER_WITHIN_S)


async def test_stop_cancels_an_answer_stuck_past_the_grace(
    server_nc: Client, nc: Client, subject: str
) -> None:
    outcome: list[str] = []
    arrived = asyncio.Event()

    async def stuck(body: bytes) -> bytes:
        arrived.set()
        try:
            await asyncio.Event().wait()  # a dependency that never answers
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise
        return body

    responder = await started(server_nc, subject, stuck, limit=2, grace_s=0.0)
    waiting = asyncio.create_task(ask(nc, subject, b"stuck"))
    await asyncio.wait_for(arrived.wait(), ANSWER_WITHIN_S)
    await responder.stop()
    waiting.cancel()  # no answer comes; the requester would time out
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
    assert outcome == ["cancelled"]
