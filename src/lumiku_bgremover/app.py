"""Wiring: the FastStream application, its broker and the adapters its handlers use."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from faststream import ContextRepo, FastStream
from faststream.nats import NatsBroker
from faststream.nats.prometheus import NatsPrometheusMiddleware
from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry

from lumiku_bgremover import db, messaging
from lumiku_bgremover.handlers.admin import register_admin_handlers
from lumiku_bgremover.handlers.integrations import register_integration_handlers
from lumiku_bgremover.handlers.plain import PlainResponder
from lumiku_bgremover.handlers.quotes import quote_responder
from lumiku_bgremover.handlers.requests import register_request_handlers
from lumiku_bgremover.observability import METRICS_KEY, Metrics, observe
from lumiku_bgremover.observability.tracing import Tracing
from lumiku_bgremover.pipeline.runtime import PIPELINE_KEY, run_pipeline
from lumiku_bgremover.provisioning import check_provisioned, provision_streams
from lumiku_bgremover.services import SERVICES_KEY, Clock, Services, utc_now
from lumiku_bgremover.settings import Settings
from lumiku_bgremover.storage import ObjectStore, build_object_store
from lumiku_bgremover.storage.lifecycle import expiry_rules

__all__ = [
    "SERVICES_KEY",
    "Clock",
    "Services",
    "StartupError",
    "check_provisioning",
    "check_schema",
    "create_app",
    "instrument",
    "open_services",
    "plain_responders",
    "provision",
    "register_handlers",
]

log = logging.getLogger(__name__)

#: Seconds the start-up waits for the server to confirm the subscriptions.
READY_FLUSH_TIMEOUT_S = 10


class StartupError(RuntimeError):
    """The service cannot start; the message says what to do."""


async def provision(settings: Settings, store: ObjectStore) -> dict[str, str]:
    """Streams and the bucket (with its expiry rules); returns what happened to each stream."""
    await store.ensure_bucket()
    await store.apply_retention(expiry_rules(settings.retention))
    nc = await messaging.connect(settings.nats, name=f"{messaging.CLIENT_NAME}-provision")
    try:
        actions = await provision_streams(
            nc.jetstream(), settings.nats, settings.limits, settings.integrations
        )
    finally:
        await nc.close()
    return {name: str(action) for name, action in actions.items()}


async def check_provisioning(settings: Settings) -> int:
    """`PROVISION_ON_START=false`: the consumers `run` binds exist; how many were checked."""
    nc = await messaging.connect(settings.nats, name=f"{messaging.CLIENT_NAME}-provision")
    try:
        return await check_provisioned(
            nc.jetstream(), settings.nats, settings.limits, settings.integrations
        )
    finally:
        await nc.close()


async def check_schema(pool: asyncpg.Pool) -> None:
    """Refuse to start on a database whose migrations have not been applied."""
    async with pool.acquire() as conn:
        waiting = await db.pending(conn)
    if waiting:
        raise StartupError(
            f"database schema is behind ({', '.join(waiting)} not applied): "
            "run `lumiku-bgremover migrate` first"
        )


@asynccontextmanager
async def open_services(settings: Settings, *, clock: Clock = utc_now) -> AsyncIterator[Services]:
    """Connect the pool, check the schema, provision streams and bucket (or check them,
    with `provision_on_start` off); close on exit."""
    pool = await db.create_pool(settings.require_database())
    try:
        await check_schema(pool)
        store = build_object_store(settings.storage)
        if settings.provision_on_start:
            for stream, action in (await provision(settings, store)).items():
                log.info("stream %s: %s", stream, action)
        else:
            checked = await check_provisioning(settings)
            log.info("provisioned beforehand: %d consumers checked", checked)
        yield Services(settings=settings, pool=pool, store=store, clock=clock)
    finally:
        await pool.close()


@asynccontextmanager
async def plain_responders(
    services: Services, metrics: Metrics, tracing: Tracing
) -> AsyncIterator[list[PlainResponder]]:
    """The quote subject on a plain nats-py connection of its own (none in a worker),
    subscribed and flushed before this yields; on exit unsubscribed, the answers in
    flight finished (`PlainResponder.stop`), the connection closed."""
    settings = services.settings
    if not settings.role.serves_requests:
        yield []
        return
    name = f"{messaging.CLIENT_NAME}-replies"
    nc = await messaging.connect(settings.nats, name=name, log_events=True)
    responders = [quote_responder(nc, services, tracing=tracing, counter=metrics.replies)]
    try:
        for responder in responders:
            await responder.start()
        await nc.flush(timeout=READY_FLUSH_TIMEOUT_S)
        yield responders
    finally:
        for responder in responders:
            await responder.stop()
        await messaging.close(nc)


def register_handlers(broker: NatsBroker, settings: Settings) -> None:
    """Subscribe every FastStream handler of the role; the admin subjects only when
    enabled (quotes are served by `plain_responders`).

    A worker (`ROLE=worker`) subscribes nothing here: it serves the work queue only.
    """
    if not settings.role.serves_requests:
        return
    register_request_handlers(broker, settings)
    register_integration_handlers(broker, settings)
    if register_admin_handlers(broker, settings):
        log.warning("admin subjects are enabled (ADMIN_SUBJECTS_ENABLED)")


def instrument(
    broker: NatsBroker, settings: Settings, tracer_provider: TracerProvider | None = None
) -> Metrics:
    """Our metrics on a fresh registry, with FastStream's subscriber metrics when served,
    and FastStream's subscriber spans (continuing a caller's `traceparent`) when the
    `otel` extra is installed."""
    metrics = Metrics(CollectorRegistry())
    if settings.observability.metrics_port:
        broker.add_middleware(
            NatsPrometheusMiddleware(registry=metrics.registry, app_name=messaging.CLIENT_NAME)
        )
    if importlib.util.find_spec("opentelemetry.semconv") is not None:
        from faststream.nats.opentelemetry import NatsTelemetryMiddleware  # noqa: PLC0415

        broker.add_middleware(NatsTelemetryMiddleware(tracer_provider=tracer_provider))
    return metrics


def create_app(
    settings: Settings,
    broker: NatsBroker | None = None,
    *,
    clock: Clock = utc_now,
    tracer_provider: TracerProvider | None = None,
) -> FastStream:
    """The service: a broker with the handlers of its role, and a lifespan that owns the
    adapters (the work queue runs only in the `worker` and `all` roles).

    `clock` is the time source handlers price and count quota with (tests pin it);
    spans go to `tracer_provider` (the global OpenTelemetry provider when None).
    """
    broker = broker or messaging.build_broker(settings.nats)
    register_handlers(broker, settings)
    context = ContextRepo()
    metrics = instrument(broker, settings, tracer_provider)
    tracing = Tracing(tracer_provider)
    work = settings.role.works

    @asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        async with (
            open_services(settings, clock=clock) as services,
            run_pipeline(services, metrics=metrics, tracing=tracing, work=work) as pipeline,
            plain_responders(services, metrics, tracing),
            observe(services, metrics, broker.ping),
        ):
            context.set_global(SERVICES_KEY, services)
            context.set_global(PIPELINE_KEY, pipeline)
            context.set_global(METRICS_KEY, metrics)
            yield

    async def announce() -> None:
        # A round trip to the server: every subscription is registered once it returns,
        # so a request sent after "ready" finds its responder (no NoRespondersError).
        await broker.connection.flush(timeout=READY_FLUSH_TIMEOUT_S)
        log.info("lumiku-bgremover ready (role %s)", settings.role)

    return FastStream(
        broker, lifespan=lifespan, context=context, after_startup=[announce],
        logger=logging.getLogger(messaging.BROKER_LOGGER),
    )  # fmt: skip
