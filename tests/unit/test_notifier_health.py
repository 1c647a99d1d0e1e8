"""The notifier role's metrics and health server: on `METRICS_PORT`, off at 0."""

import asyncio

import httpx
import pytest
from prometheus_client import CollectorRegistry

from lumiku_bgremover.handlers.notifier import notifier_readiness, notifier_registry
from lumiku_bgremover.messaging import build_broker
from lumiku_bgremover.observability.health import Readiness
from lumiku_bgremover.observability.runtime import serve_health
from lumiku_bgremover.settings import NatsSettings, ObservabilitySettings, Settings
from tests.fixtures._common import free_port


async def fine() -> None:
    return None


async def broken() -> None:
    raise ConnectionError("gone")


async def test_a_port_of_zero_serves_nothing() -> None:
    readiness = Readiness({}, timeout_s=1)
    async with serve_health(ObservabilitySettings(), CollectorRegistry(), readiness) as server:
        assert server is None


async def test_probes_answer_and_readiness_follows_the_checks() -> None:
    port = free_port()
    config = ObservabilitySettings(metrics_port=port, metrics_host="127.0.0.1")
    readiness = Readiness({"nats": fine, "postgres": broken}, timeout_s=1)
    async with (
        serve_health(config, CollectorRegistry(), readiness) as server,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http,
    ):
        assert server is not None
        assert (await http.get("/livez")).status_code == 200
        ready = await http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"] == {"nats": "ok", "postgres": "ConnectionError: gone"}
        assert (await http.get("/metrics")).status_code == 200
    with pytest.raises(OSError):  # stopped with the lifespan: nothing listens any more
        await asyncio.open_connection("127.0.0.1", port)


async def test_the_notifier_checks_nats_and_postgres() -> None:
    async def ping(_: float) -> bool:
        return False

    settings = Settings(observability=ObservabilitySettings(health_timeout_s=0.5))
    report = await notifier_readiness(settings, None, ping).check()  # type: ignore[arg-type]
    assert set(report.results) == {"nats", "postgres"}
    assert not report.ready


def test_subscriber_metrics_only_when_served() -> None:
    for port, middlewares in ((0, 0), (9100, 1)):
        broker = build_broker(NatsSettings())
        before = len(broker.middlewares)
        settings = Settings(observability=ObservabilitySettings(metrics_port=port))
        notifier_registry(broker, settings)
        assert len(broker.middlewares) - before == middlewares
