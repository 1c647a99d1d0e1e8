"""The optional `notifier` role: completion e-mails from `bgremove.batch.completed`.

Its own durable consumer on the events stream (provisioned with the others),
NACK on error: a refused send comes back after a growing delay; an unexpected
failure (database down) too. Nothing else runs in this role but the metrics and
health server on `METRICS_PORT` (`/metrics`, `/livez`, `/readyz`: NATS and PostgreSQL).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Final

import asyncpg
from faststream import AckPolicy, Context, ContextRepo, FastStream
from faststream.exceptions import NackMessage
from faststream.nats import JStream, NatsBroker, PullSub
from faststream.nats.annotations import NatsMessage
from faststream.nats.prometheus import NatsPrometheusMiddleware
from prometheus_client import CollectorRegistry

from lumiku_bgremover import db, messaging
from lumiku_bgremover.app import check_schema
from lumiku_bgremover.envparse import SettingsError
from lumiku_bgremover.integrations.mailer import Mailer, SmtpMailer
from lumiku_bgremover.integrations.notify import Notifier, SendFailedError, retry_delay
from lumiku_bgremover.observability.health import Ping, Readiness, nats_check, postgres_check
from lumiku_bgremover.observability.runtime import serve_health
from lumiku_bgremover.provisioning import StreamNames, notifier_consumer_config
from lumiku_bgremover.queue import backoff_delay
from lumiku_bgremover.services import Clock, utc_now
from lumiku_bgremover.settings import Settings

log = logging.getLogger(__name__)

#: Key under which the handler finds the `Notifier` in FastStream's context.
NOTIFIER_KEY: Final = "notifier"
InjectedNotifier = Annotated[Notifier, Context(NOTIFIER_KEY)]


def mailer_for(settings: Settings) -> Mailer:
    """The SMTP mailer the settings describe; `SMTP_HOST` is required for this role."""
    if settings.notifier.smtp is None:
        raise SettingsError("SMTP_HOST", "is required by the notifier role")
    return SmtpMailer(settings.notifier.smtp)


async def notify(notifier: Notifier, settings: Settings, message: NatsMessage) -> None:
    """Send the batch's e-mail; NAK with a delay when it was refused or anything failed."""
    options = settings.notifier
    try:
        await notifier.on_completed(message.body)
    except SendFailedError as failure:
        delay = retry_delay(failure.attempts, base_s=options.retry_delay_s,
                            most_s=options.retry_max_s)  # fmt: skip
        raise NackMessage(delay=delay) from failure
    except Exception as error:
        attempt = message.raw_message.metadata.num_delivered
        log.exception("notifier failed (attempt %d)", attempt)
        raise NackMessage(delay=backoff_delay(attempt)) from error


def register_notifier_handler(broker: NatsBroker, settings: Settings) -> None:
    """Bind the notifier's durable consumer of `batch.completed`."""
    config = notifier_consumer_config(settings.nats)
    stream = JStream(StreamNames.of(settings.nats).events, declare=False)

    @broker.subscriber(
        config.filter_subject or "", stream=stream, durable=config.durable_name, config=config,
        pull_sub=PullSub(batch_size=1, timeout=5.0), ack_policy=AckPolicy.NACK_ON_ERROR,
    )  # fmt: skip
    async def on_completed(msg: NatsMessage, notifier: InjectedNotifier) -> None:
        await notify(notifier, settings, msg)


def notifier_readiness(settings: Settings, pool: asyncpg.Pool, ping: Ping) -> Readiness:
    """NATS (through `ping`) and PostgreSQL: what the notifier needs to send and record."""
    timeout = settings.observability.health_timeout_s
    checks = {"nats": nats_check(ping, timeout), "postgres": postgres_check(pool, timeout)}
    return Readiness(checks, timeout_s=timeout)


def notifier_registry(broker: NatsBroker, settings: Settings) -> CollectorRegistry:
    """A fresh registry with FastStream's subscriber metrics when the server is on."""
    registry = CollectorRegistry()
    if settings.observability.metrics_port:
        broker.add_middleware(
            NatsPrometheusMiddleware(registry=registry, app_name=messaging.CLIENT_NAME)
        )
    return registry


def create_notifier_app(
    settings: Settings, *, mailer: Mailer | None = None, clock: Clock = utc_now
) -> FastStream:
    """The `notifier` role: a broker with one subscriber, a database pool, and the
    metrics and health server (off when `METRICS_PORT` is 0)."""
    mailer = mailer or mailer_for(settings)
    broker = messaging.build_broker(settings.nats)
    register_notifier_handler(broker, settings)
    registry = notifier_registry(broker, settings)
    context = ContextRepo()

    @asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        pool = await db.create_pool(settings.require_database())
        try:
            await check_schema(pool)
            sender = settings.notifier.smtp.sender if settings.notifier.smtp else "lumiku"
            context.set_global(NOTIFIER_KEY, Notifier(pool, mailer, sender, clock))
            readiness = notifier_readiness(settings, pool, broker.ping)
            async with serve_health(settings.observability, registry, readiness):
                yield
        finally:
            await pool.close()

    async def announce() -> None:
        log.info("lumiku-bgremover notifier ready")

    return FastStream(broker, lifespan=lifespan, context=context, after_startup=[announce])
