"""Thin subscribers of the request stream (batch, image, cancel) and of batch status.

The stream and its durable consumers are provisioned beforehand (`declare=False`):
these subscribers only bind. A handler that fails unexpectedly (database or
NATS down) NAKs with a growing delay; the request is never dropped. While a
dependency is down the delay stays short (`OUTAGE_RETRY_S`), so a request waits
no longer than the outage.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Annotated, Any

from faststream import AckPolicy, Context
from faststream.exceptions import NackMessage
from faststream.nats import JStream, NatsBroker, PullSub
from faststream.nats.annotations import NatsMessage
from faststream.nats.subscriber.usecases.basic import LogicSubscriber

from lumiku_bgremover.contracts import (
    BatchStatusReply,
    BatchStatusRequest,
    subjects,
)
from lumiku_bgremover.handlers.replying import respond
from lumiku_bgremover.pipeline import control
from lumiku_bgremover.pipeline.dependencies import is_outage
from lumiku_bgremover.pipeline.runtime import PIPELINE_KEY, Pipeline
from lumiku_bgremover.provisioning import StreamNames, request_consumer_configs
from lumiku_bgremover.queue import backoff_delay
from lumiku_bgremover.settings import Settings

log = logging.getLogger(__name__)

InjectedPipeline = Annotated[Pipeline, Context(PIPELINE_KEY)]
#: Core-NATS queue group of the status subject.
STATUS_QUEUE = "bgremove-status"
#: Seconds before a request that failed because a dependency was down is tried again.
OUTAGE_RETRY_S = 3.0


async def settle(work: Awaitable[None], message: NatsMessage) -> None:
    """Run a request's handling; on an unexpected failure NAK with a growing delay."""
    try:
        await work
    except Exception as error:
        attempt = message.raw_message.metadata.num_delivered
        delay = OUTAGE_RETRY_S if is_outage(error) else backoff_delay(attempt)
        log.exception("request on %s failed (attempt %d); retry in %.0f s",
                      message.raw_message.subject, attempt, delay)  # fmt: skip
        raise NackMessage(delay=delay) from error


async def cancel(pipeline: Pipeline, body: bytes, *, message_key: str | None = None) -> None:
    """Cancel a batch, or answer `request.rejected` with why not (it charges nothing)."""
    await control.on_cancel(
        pipeline.services.pool, pipeline.finalizer, pipeline.announcer, body,
        message_key=message_key,
    )  # fmt: skip


async def status(pipeline: Pipeline, body: bytes) -> bytes:
    """The encoded `BatchStatusReply` or `ErrorReply`."""

    async def answer(request: BatchStatusRequest) -> BatchStatusReply:
        return await control.batch_status(pipeline.services.pool, pipeline.finalizer, request)

    return await respond(BatchStatusRequest, body, answer, subject=subjects.BATCH_STATUS)


def register_request_handlers(broker: NatsBroker, settings: Settings) -> None:
    """Bind the request consumers and the status subject."""
    stream = JStream(StreamNames.of(settings.nats).requests, declare=False)
    consumers = request_consumer_configs(settings.nats)

    def bind(subject: str) -> LogicSubscriber[Any]:
        config = consumers[subject]
        return broker.subscriber(
            config.filter_subject or "", stream=stream, durable=config.durable_name,
            config=config, pull_sub=PullSub(batch_size=1, timeout=5.0),
            ack_policy=AckPolicy.NACK_ON_ERROR,
        )  # fmt: skip

    @bind(subjects.BATCH_REQUESTED)
    async def on_batch(msg: NatsMessage, pipeline: InjectedPipeline) -> None:
        await settle(pipeline.intake.on_batch(msg.body), msg)

    @bind(subjects.IMAGE_REQUESTED)
    async def on_image(msg: NatsMessage, pipeline: InjectedPipeline) -> None:
        await settle(pipeline.intake.on_image(msg.body), msg)

    @bind(subjects.BATCH_CANCEL)
    async def on_cancel(msg: NatsMessage, pipeline: InjectedPipeline) -> None:
        sequence = msg.raw_message.metadata.sequence.stream  # the same on a redelivery
        await settle(cancel(pipeline, msg.body, message_key=str(sequence)), msg)

    status_subject = subjects.with_prefix(settings.nats.subject_prefix, subjects.BATCH_STATUS)

    @broker.subscriber(status_subject, queue=STATUS_QUEUE)
    async def on_status(msg: NatsMessage, pipeline: InjectedPipeline) -> bytes:
        return await status(pipeline, msg.body)
