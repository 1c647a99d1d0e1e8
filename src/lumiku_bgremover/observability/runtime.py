"""The metrics and health server with the lag monitor, for the service's lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prometheus_client import CollectorRegistry

from lumiku_bgremover import messaging
from lumiku_bgremover.observability.health import (
    Ping,
    Readiness,
    bucket_check,
    nats_check,
    postgres_check,
)
from lumiku_bgremover.observability.lag import LagMonitor
from lumiku_bgremover.observability.metrics import Metrics
from lumiku_bgremover.observability.server import HealthServer
from lumiku_bgremover.services import Services
from lumiku_bgremover.settings import ObservabilitySettings

__all__ = ["METRICS_KEY", "observe", "readiness_of", "serve_health"]

#: Key under which handlers find the `Metrics` in FastStream's context.
METRICS_KEY = "metrics"


def readiness_of(services: Services, ping: Ping) -> Readiness:
    """NATS (through `ping`), PostgreSQL and the object store of `services`."""
    timeout = services.settings.observability.health_timeout_s
    checks = {
        "nats": nats_check(ping, timeout),
        "postgres": postgres_check(services.pool, timeout),
        "object_store": bucket_check(services.store),
    }
    return Readiness(checks, timeout_s=timeout)


@asynccontextmanager
async def observe(
    services: Services, metrics: Metrics, ping: Ping
) -> AsyncIterator[HealthServer | None]:
    """Serve `/metrics`, `/livez`, `/readyz` and measure the lag; None when the port is 0."""
    settings = services.settings
    config = settings.observability
    if config.metrics_port == 0:
        yield None
        return
    server = HealthServer(
        metrics.registry, readiness_of(services, ping),
        host=config.metrics_host, port=config.metrics_port,
    )  # fmt: skip
    nc = await messaging.connect(settings.nats, name=f"{messaging.CLIENT_NAME}-metrics")
    monitor = LagMonitor(nc.jetstream(), settings.nats, settings.limits, metrics)
    try:
        await server.start()
        async with monitor.running(config.lag_interval_s):
            yield server
    finally:
        await server.stop()
        await messaging.close(nc)


@asynccontextmanager
async def serve_health(
    config: ObservabilitySettings, registry: CollectorRegistry, readiness: Readiness
) -> AsyncIterator[HealthServer | None]:
    """Serve `/metrics`, `/livez`, `/readyz` with no lag monitor (the notifier role);
    None when the port is 0."""
    if config.metrics_port == 0:
        yield None
        return
    server = HealthServer(registry, readiness, host=config.metrics_host, port=config.metrics_port)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
