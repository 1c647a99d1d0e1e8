"""Publishing outbound events: CloudEvents headers, `Nats-Msg-Id`, a PubAck awaited."""

from __future__ import annotations

import msgspec
from nats.js import JetStreamContext

from lumiku_bgremover.contracts import subjects
from lumiku_bgremover.contracts.cloudevents import event_headers, stable_event_id
from lumiku_bgremover.contracts.codec import encode
from lumiku_bgremover.provisioning import StreamNames
from lumiku_bgremover.services import Clock, utc_now
from lumiku_bgremover.settings import NatsSettings

#: `ce-source` of every event this service publishes.
SOURCE = "urn:lumiku:bgremover"


class EventPublisher:
    """Publishes events to the events stream; the same `key` gives the same event id."""

    def __init__(
        self, js: JetStreamContext, settings: NatsSettings, *, clock: Clock = utc_now
    ) -> None:
        self._js, self._settings, self._clock = js, settings, clock
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
            headers=headers,
        )
        return event_id
