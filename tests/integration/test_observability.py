"""The metrics and health server against real NATS, PostgreSQL and S3."""

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import httpx
import msgspec
import pytest
import pytest_asyncio
from nats.aio.client import Client
from prometheus_client import CollectorRegistry

from lumiku_bgremover.contracts import QuoteRequest, Tier, encode
from lumiku_bgremover.contracts.codec import decode
from lumiku_bgremover.contracts.subjects import BATCH_STATUS, QUOTE, with_prefix
from lumiku_bgremover.contracts.work import Lane, WorkItem
from lumiku_bgremover.observability import (
    HealthServer,
    Metrics,
    nats_client_ping,
    observe,
    readiness_of,
)
from lumiku_bgremover.provisioning import provision_streams
from lumiku_bgremover.queue import JetStreamWorkQueue
from lumiku_bgremover.services import Services
from lumiku_bgremover.settings import (
    Limits,
    NatsSettings,
    ObservabilitySettings,
    S3Settings,
    Settings,
    StorageSettings,
)
from lumiku_bgremover.storage import S3ObjectStore
from tests.fixtures._common import free_port
from tests.integration.service import running_app, service_settings

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).parents[2] / "contracts" / "examples" / "WorkItem.json"
DEADLINE_S = 10.0


def settings_for(
    nats_url: str, namespace: str, s3: S3Settings, **observability: object
) -> Settings:
    return Settings(
        nats=NatsSettings(
            servers=(nats_url,), subject_prefix=f"{namespace}.", stream_prefix=namespace.upper()
        ),
        storage=StorageSettings(backend="s3", s3=s3),
        limits=Limits(work_partitions=2),
        observability=ObservabilitySettings(health_timeout_s=2.0, **observability),  # type: ignore[arg-type]
    )


@pytest_asyncio.fixture
async def services(
    nats_url: str, nats_namespace: str, s3_settings: S3Settings, db_pool: asyncpg.Pool
) -> Services:
    settings = settings_for(nats_url, nats_namespace, s3_settings)
    return Services(settings, db_pool, S3ObjectStore.from_settings(s3_settings))


@pytest_asyncio.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=DEADLINE_S) as http:
        yield http


async def poll(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + DEADLINE_S
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"not within {DEADLINE_S} s: {what}")
        await asyncio.sleep(0.05)


async def _break(dependency: str, services: Services, nc: Client) -> Services:
    if dependency == "nats":
        await nc.close()
        return services
    if dependency == "postgres":
        await services.pool.close()
        return services
    s3 = services.settings.storage.s3
    assert s3 is not None
    missing = dataclasses.replace(s3, bucket=f"{s3.bucket}-missing")
    return dataclasses.replace(services, store=S3ObjectStore.from_settings(missing))


@pytest.mark.parametrize("dependency", ["nats", "postgres", "object_store"])
async def test_readiness_flips_when_a_dependency_goes(
    dependency: str, services: Services, nc: Client, client: httpx.AsyncClient
) -> None:
    healthy = HealthServer(
        CollectorRegistry(), readiness_of(services, nats_client_ping(nc)), host="127.0.0.1", port=0
    )
    await healthy.start()
    try:
        ready = await client.get(f"http://127.0.0.1:{healthy.port}/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"nats": "ok", "postgres": "ok", "object_store": "ok"}

        broken = await _break(dependency, services, nc)
        readiness = readiness_of(broken, nats_client_ping(nc))
        server = HealthServer(CollectorRegistry(), readiness, host="127.0.0.1", port=0)
        await server.start()
        try:
            answer = await client.get(f"http://127.0.0.1:{server.port}/readyz")
            live = await client.get(f"http://127.0.0.1:{server.port}/livez")
        finally:
            await server.stop()
    finally:
        await healthy.stop()
    assert answer.status_code == 503
    checks = answer.json()["checks"]
    assert checks[dependency] != "ok"
    assert all(result == "ok" for name, result in checks.items() if name != dependency)
    assert live.status_code == 200


async def test_metrics_serve_the_lag_by_lane(
    services: Services, nc: Client, client: httpx.AsyncClient
) -> None:
    port = free_port()
    observability = ObservabilitySettings(
        metrics_port=port, metrics_host="127.0.0.1", lag_interval_s=0.1
    )
    settings = dataclasses.replace(services.settings, observability=observability)
    services = dataclasses.replace(services, settings=settings)
    js = nc.jetstream()
    await provision_streams(js, settings.nats, settings.limits)
    template = decode(WorkItem, EXAMPLE.read_bytes())
    for number, lane in enumerate([Lane.BULK, Lane.BULK, Lane.BULK, Lane.INTERACTIVE]):
        item = msgspec.structs.replace(
            template, item_id=f"{template.batch_id}:{number}", lane=lane, user_id=f"u{number}"
        )
        await JetStreamWorkQueue(js, settings.nats).enqueue(item)

    async with observe(services, Metrics(CollectorRegistry()), nats_client_ping(nc)) as server:
        assert server is not None

        async def lag_shown() -> bool:
            text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
            return (
                'lumiku_bgremover_work_queue_lag{lane="bulk"} 3.0' in text
                and 'lumiku_bgremover_work_queue_lag{lane="interactive"} 1.0' in text
                and "lumiku_bgremover_work_queue_lag_total 4.0" in text
            )

        await poll(lag_shown, "the lag gauges show the enqueued items")
        metrics = await client.get(f"http://127.0.0.1:{port}/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "lumiku_bgremover_engine_latency_seconds" in metrics.text


async def test_a_port_of_zero_serves_nothing(services: Services, nc: Client) -> None:
    async with observe(services, Metrics(CollectorRegistry()), nats_client_ping(nc)) as server:
        assert server is None


async def test_unknown_paths_and_methods(services: Services, nc: Client) -> None:
    server = HealthServer(
        CollectorRegistry(), readiness_of(services, nats_client_ping(nc)), host="127.0.0.1", port=0
    )
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            assert (await http.get("/nope")).status_code == 404
            assert (await http.post("/readyz")).status_code == 405
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"garbage\r\n\r\n")
        await writer.drain()
        assert (await reader.read()).startswith(b"HTTP/1.1 400 ")
        writer.close()
        await writer.wait_closed()
    finally:
        await server.stop()


async def test_the_running_service_serves_probes_and_subscriber_metrics(
    nats_url: str,
    nats_namespace: str,
    migrated_database_url: str,
    s3_settings: S3Settings,
    nc: Client,
    client: httpx.AsyncClient,
) -> None:
    port = free_port()
    settings = dataclasses.replace(
        service_settings(nats_url, nats_namespace, migrated_database_url, s3_settings),
        observability=ObservabilitySettings(metrics_port=port, metrics_host="127.0.0.1"),
    )
    base = f"http://127.0.0.1:{port}"
    async with running_app(settings):
        assert (await client.get(f"{base}/livez")).status_code == 200
        ready = await client.get(f"{base}/readyz")
        assert ready.status_code == 200, ready.text
        request = QuoteRequest(user_id="u-metrics", tier=Tier.BASIC, count=3)
        quote = with_prefix(settings.nats.subject_prefix, QUOTE)
        status = with_prefix(settings.nats.subject_prefix, BATCH_STATUS)
        await nc.request(quote, encode(request), timeout=DEADLINE_S)
        await nc.request(status, b"{}", timeout=DEADLINE_S)

        async def counted(name: str, subject: str) -> bool:
            text = (await client.get(f"{base}/metrics")).text
            return any(
                line.startswith(f"{name}{{") and subject in line and not line.endswith(" 0.0")
                for line in text.splitlines()
            )

        async def quote_counted() -> bool:
            return await counted("lumiku_bgremover_replies_total", quote)

        async def status_counted() -> bool:
            return await counted("faststream_received_messages_total", status)

        await poll(quote_counted, "the plain quote responder counts the quote request")
        await poll(status_counted, "FastStream's middleware counts the status request")
