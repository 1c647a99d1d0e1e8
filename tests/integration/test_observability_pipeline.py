"""A batch through the running service: the metrics endpoint shows the counters move by
the right amounts, and one trace (the caller's) links intake, every item and completion."""

import asyncio
import dataclasses
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import httpx
import msgspec
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from lumiku_bgremover.contracts import subjects
from lumiku_bgremover.settings import ObservabilitySettings, S3Settings
from tests.fixtures._common import free_port
from tests.integration.pipeline_harness import (
    Client,
    EventLog,
    batch_request,
    client_for,
    photo,
    with_fake_engine,
)
from tests.integration.service import running_app, service_settings

pytestmark = pytest.mark.integration

DEADLINE_S = 60.0
T = TypeVar("T")
Labels = dict[str, str]


def sample(text: str, name: str, labels: Labels) -> float:
    """The value of one sample in a Prometheus exposition (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and all(found.labels.get(k) == v for k, v in labels.items()):
                return float(found.value)
    return 0.0


#: (sample name, labels) -> how much one batch of 3 good and 1 undecodable image moves it.
EXPECTED_DELTAS: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {
    ("lumiku_bgremover_items_total", (("tier", "standard"), ("engine", "fake"),
                                      ("outcome", "done"), ("code", ""))): 3,
    ("lumiku_bgremover_items_total", (("tier", "standard"), ("engine", "none"),
                                      ("outcome", "failed"), ("code", "decode_failed"))): 1,
    ("lumiku_bgremover_engine_latency_seconds_count",
     (("engine", "fake"), ("model", "fake-matte"))): 3,
    ("lumiku_bgremover_credits_charged_total", (("tier", "standard"),)): 32,  # 4 x 8
    ("lumiku_bgremover_credits_refunded_total", (("tier", "standard"),)): 8,  # the undecodable
    ("lumiku_bgremover_batch_duration_seconds_count", (("tier", "standard"),)): 1,
}  # fmt: skip


@dataclasses.dataclass
class Running:
    client: Client
    metrics_url: str
    spans: InMemorySpanExporter


@pytest.fixture
async def running(
    nats_url: str, nats_namespace: str, migrated_database_url: str, s3_settings: S3Settings
) -> AsyncIterator[Running]:
    port = free_port()
    settings = dataclasses.replace(
        with_fake_engine(
            service_settings(nats_url, nats_namespace, migrated_database_url, s3_settings)
        ),
        observability=ObservabilitySettings(metrics_port=port, metrics_host="127.0.0.1"),
    )
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with running_app(settings, tracer_provider=provider), client_for(settings) as client:
        yield Running(client, f"http://127.0.0.1:{port}/metrics", exporter)
    provider.shutdown()


def completed(log: EventLog) -> bool:
    return bool(log.of(subjects.BATCH_COMPLETED))


async def run_batch(client: Client, user: str, traceparent: str) -> None:
    await client.grant(user, 100)
    refs = [await client.upload(user, f"p{i}.png", photo(i)) for i in range(3)]
    refs.append(await client.upload(user, "junk.png", b"not an image at all"))
    body = batch_request(f"req-{user}", user, refs)
    subject = subjects.with_prefix(client.settings.nats.subject_prefix, subjects.BATCH_REQUESTED)
    await client.nc.jetstream().publish(
        subject, msgspec.json.encode(body), headers={"traceparent": traceparent}, timeout=10
    )
    await client.events.wait(completed, DEADLINE_S)


async def scrape(url: str) -> str:
    async with httpx.AsyncClient(timeout=10) as http:
        return (await http.get(url)).text


async def settled(read: Callable[[], Awaitable[T]], done: Callable[[T], bool]) -> T:
    """`read()` until `done` holds of its answer or 10 s pass; the last answer."""
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        answer = await read()
        if done(answer) or asyncio.get_running_loop().time() > deadline:
            return answer
        await asyncio.sleep(0.05)


async def test_a_batch_moves_the_counters_by_the_right_amounts(running: Running) -> None:
    before = await scrape(running.metrics_url)
    await run_batch(
        running.client, "metered", f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
    )

    async def deltas() -> dict[str, float]:
        after = await scrape(running.metrics_url)
        return {
            f"{name}{dict(labels)}": sample(after, name, dict(labels))
            - sample(before, name, dict(labels))
            for name, labels in EXPECTED_DELTAS
        }

    expected = {f"{name}{dict(labels)}": delta for (name, labels), delta in EXPECTED_DELTAS.items()}
    assert await settled(deltas, lambda moved: moved == expected) == expected


async def test_one_trace_links_the_caller_intake_items_and_completion(running: Running) -> None:
    trace_id = secrets.token_hex(16)
    await run_batch(running.client, "traced", f"00-{trace_id}-{secrets.token_hex(8)}-01")

    async def ours() -> list[ReadableSpan]:
        return [
            s for s in running.spans.get_finished_spans()
            if s.name.startswith("bgremove.") and f"{s.context.trace_id:032x}" == trace_id
        ]  # fmt: skip

    spans = await settled(ours, lambda found: any(s.name == "bgremove.completion" for s in found))
    names = sorted(s.name for s in spans)
    assert names == ["bgremove.completion", "bgremove.intake", *["bgremove.item"] * 4]
    [intake] = [s for s in spans if s.name == "bgremove.intake"]
    assert intake.parent is not None  # FastStream's consumer span, a child of the caller's
    items = [s for s in spans if s.name == "bgremove.item"]
    assert all(s.parent is not None and s.parent.span_id == intake.context.span_id for s in items)
    [completion] = [s for s in spans if s.name == "bgremove.completion"]
    assert completion.parent is not None
    assert completion.parent.span_id in {s.context.span_id for s in items}
    assert {s.attributes["lumiku.item_id"] for s in items} == {
        f"{intake.attributes['lumiku.batch_id']}-{i:03d}" for i in range(4)}  # fmt: skip
    for subject, _, headers in running.client.events.seen:  # every event carries the trace
        assert headers["traceparent"].split("-")[1] == trace_id, subject
