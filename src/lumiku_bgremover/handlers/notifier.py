"""The optional `notifier` role: completion e-mails from `bgremove.batch.completed`.

Its own durable consumer on the events stream (provisioned with the others),
NACK on error: a refused send comes back after a growing delay; an unexpected
failure (database down) too. Nothing else runs in this role.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Final

from faststream import AckPolicy, Context, ContextRepo, FastStream
from faststream.exceptions import NackMessage
from faststream.nats import JStream, NatsBroker, PullSub
from faststream.nats.annotations import NatsMessage

from lumiku_bgremover import db, messaging
from lumiku_bgremover.app import check_schema
from lumiku_bgremover.envparse import SettingsError
from lumiku_bgremover.integrations.mailer import Mailer, SmtpMailer
from lumiku_bgremover.integrations.notify import Notifier, SendFailedError, retry_delay
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


def create_notifier_app(
    settings: Settings, *, mailer: Mailer | None = None, clock: Clock = utc_now
) -> FastStream:
    """The `notifier` role: a broker with one subscriber and a database pool."""
    mailer = mailer or mailer_for(settings)
    broker = messaging.build_broker(settings.nats)
    register_notifier_handler(broker, settings)
    context = ContextRepo()

    @asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        pool = await db.create_pool(settings.require_database())
        try:
            await check_schema(pool)
            sender = settings.notifier.smtp.sender if settings.notifier.smtp else "lumiku"
            context.set_global(NOTIFIER_KEY, Notifier(pool, mailer, sender, clock))
            yield
        finally:
            await pool.close()

    async def announce() -> None:
        log.info("lumiku-bgremover notifier ready")

    return FastStream(broker, lifespan=lifespan, context=context, after_startup=[announce])
