"""Publishing outbound events: a `Publisher` Protocol, JetStream and in-memory implementations.

The JetStream one sets the CloudEvents headers, `Nats-Msg-Id` and the publishing
span's `traceparent`, and awaits the PubAck; the in-memory one keeps what was published
(de-duplicated by event id, as JetStream does inside its window) for tests of the use cases.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import msgspec
from nats.js import JetStreamContext

from lumiku_bgremover.contracts import subjects
from lumiku_bgremover.contracts.cloudevents import DEFAULT_SOURCE, event_headers, stable_event_id
from lumiku_bgremover.contracts.codec import encode
from lumiku_bgremover.observability.tracing import Tracing
from lumiku_bgremover.provisioning import StreamNames
from lumiku_bgremover.services import Clock, utc_now
from lumiku_bgremover.settings import NatsSettings

#: `ce-source` of every event this service publishes (the one constant for it).
SOURCE = DEFAULT_SOURCE


class Publisher(Protocol):
    """Publishes one event; the same `key` on the same subject gives the same event id."""

    async def publish(self, subject: str, message: msgspec.Struct, *, key: str) -> str:
        """Publish `message` on the base `subject` durably; returns its event id."""
        ...


class EventPublisher:
    """Publishes events to the events stream; the same `key` gives the same event id."""

    def __init__(
        self,
        js: JetStreamContext,
        settings: NatsSettings,
        *,
        clock: Clock = utc_now,
        tracing: Tracing | None = None,
    ) -> None:
        self._js, self._settings, self._clock = js, settings, clock
        self._tracing = tracing or Tracing()
        self._stream = StreamNames.of(settings).events

    async def publish(self, subject: str, message: msgspec.Struct, *, key: str) -> str:
        """Publish `message` on the base `subject`; returns its event id.

        `key` names the fact (e.g. the batch id for `batch.completed`): a re-publish of
        the same fact carries the same id, and JetStream drops it as a duplicate.
        """
        event_id = stable_event_id(subject, key)
        headers = event_headers(
            event_id=event_id, event_type=subject, source=SOURCE, time=self._clock()
        )
        await self._js.publish(
            subjects.with_prefix(self._settings.subject_prefix, subject),
            encode(message),
            timeout=self._settings.publish_timeout_s,
            stream=self._stream,
            headers=self._tracing.headers(headers),
        )
        return event_id


@dataclass(frozen=True, slots=True)
class Published:
    """One event an `InMemoryPublisher` kept: as a subscriber would decode it."""

    subject: str
    event_id: str
    body: dict[str, Any]


class InMemoryPublisher:
    """Keeps published events in order; a repeated event id is dropped (as JetStream does)."""

    def __init__(self, *, fail_with: Exception | None = None) -> None:
        self.events: list[Published] = []
        self.fail_with = fail_with

    async def publish(self, subject: str, message: msgspec.Struct, *, key: str) -> str:
        """Record the event as its JSON would arrive; raise `fail_with` when set."""
        if self.fail_with is not None:
            raise self.fail_with
        event_id = stable_event_id(subject, key)
        if all(event.event_id != event_id for event in self.events):
            body = msgspec.json.decode(encode(message))
            self.events.append(Published(subject, event_id, body))
        return event_id

    def of(self, subject: str) -> list[dict[str, Any]]:
        """Bodies published on one base subject, in order."""
        return [event.body for event in self.events if event.subject == subject]
