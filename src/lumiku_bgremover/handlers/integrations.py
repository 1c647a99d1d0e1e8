"""Thin subscribers of other apps' events (one durable consumer per app, on the stream
the configuration names) and the settings request-reply subjects.

Streams and consumers are provisioned beforehand (`declare=False`). A handler
that fails unexpectedly (database or NATS down) NAKs with a growing delay; a
malformed or unwanted event is answered or logged by the use case and acked.
"""

from __future__ import annotations

from typing import Final

from faststream import AckPolicy
from faststream.nats import JStream, NatsBroker, PullSub
from faststream.nats.annotations import NatsMessage

from lumiku_bgremover.contracts import (
    SettingsGetRequest,
    SettingsReply,
    SettingsSetRequest,
    subjects,
)
from lumiku_bgremover.contracts.common import App
from lumiku_bgremover.handlers.replying import InjectedServices, respond
from lumiku_bgremover.handlers.requests import InjectedPipeline, settle
from lumiku_bgremover.integration_settings import Binding
from lumiku_bgremover.integrations.intake import IntegrationIntake
from lumiku_bgremover.integrations.preferences import get_settings, set_setting
from lumiku_bgremover.pipeline.runtime import Pipeline
from lumiku_bgremover.provisioning import integration_consumer_config
from lumiku_bgremover.services import Services
from lumiku_bgremover.settings import Settings

#: Core-NATS queue group of the settings subjects.
SETTINGS_QUEUE: Final = "bgremove-settings"


async def handle_event(pipeline: Pipeline, app: App, body: bytes) -> None:
    """Route one app's raw event to its use case."""
    intake = IntegrationIntake(pipeline.services.pool, pipeline.intake, pipeline.announcer)
    handlers = {
        App.AVATAR_CREATOR: intake.on_avatar_project,
        App.POSE_GENERATOR: intake.on_pose,
        App.UPSCALER: intake.on_upscaled,
    }
    await handlers[app](body)


async def answer_get(services: Services, body: bytes) -> bytes:
    """The encoded `SettingsReply` or `ErrorReply` of a `settings.get`."""

    async def answer(request: SettingsGetRequest) -> SettingsReply:
        async with services.pool.acquire() as conn:
            return await get_settings(conn, request)

    return await respond(SettingsGetRequest, body, answer, subject=subjects.SETTINGS_GET)


async def answer_set(services: Services, body: bytes) -> bytes:
    """The encoded `SettingsReply` or `ErrorReply` of a `settings.set`."""

    async def answer(request: SettingsSetRequest) -> SettingsReply:
        async with services.pool.acquire() as conn:
            return await set_setting(conn, request)

    return await respond(SettingsSetRequest, body, answer, subject=subjects.SETTINGS_SET)


def _bind_app(broker: NatsBroker, settings: Settings, binding: Binding) -> None:
    config = integration_consumer_config(settings.nats, binding)
    subscriber = broker.subscriber(
        config.filter_subject or "", stream=JStream(binding.stream, declare=False),
        durable=binding.durable, config=config, pull_sub=PullSub(batch_size=1, timeout=5.0),
        ack_policy=AckPolicy.NACK_ON_ERROR,
    )  # fmt: skip
    app = binding.app

    @subscriber
    async def on_event(msg: NatsMessage, pipeline: InjectedPipeline) -> None:
        await settle(handle_event(pipeline, app, msg.body), msg)


def register_integration_handlers(broker: NatsBroker, settings: Settings) -> None:
    """Bind each enabled app's consumer, and the settings subjects."""
    for binding in settings.integrations.bindings(settings.nats.stream_prefix):
        _bind_app(broker, settings, binding)
    prefix = settings.nats.subject_prefix

    @broker.subscriber(subjects.with_prefix(prefix, subjects.SETTINGS_GET), queue=SETTINGS_QUEUE)
    async def on_get(msg: NatsMessage, services: InjectedServices) -> bytes:
        return await answer_get(services, msg.body)

    @broker.subscriber(subjects.with_prefix(prefix, subjects.SETTINGS_SET), queue=SETTINGS_QUEUE)
    async def on_set(msg: NatsMessage, services: InjectedServices) -> bytes:
        return await answer_set(services, msg.body)
