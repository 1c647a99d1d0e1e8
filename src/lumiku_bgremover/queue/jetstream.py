"""The work queue on JetStream: a keyed work-queue stream, de-duplicated by item id."""

from __future__ import annotations

from nats.js import JetStreamContext

from lumiku_bgremover.contracts import subjects
from lumiku_bgremover.contracts.codec import encode
from lumiku_bgremover.contracts.work import WorkItem
from lumiku_bgremover.observability.tracing import Tracing
from lumiku_bgremover.provisioning import StreamNames
from lumiku_bgremover.settings import NatsSettings


class JetStreamWorkQueue:
    """Publishes work items; `Nats-Msg-Id` = item id, so a re-publish is de-duplicated.

    Each item carries the enqueuing span's `traceparent`: its processing joins that trace.
    """

    def __init__(
        self, js: JetStreamContext, settings: NatsSettings, *, tracing: Tracing | None = None
    ) -> None:
        self._js, self._settings = js, settings
        self._tracing = tracing or Tracing()
        self._stream = StreamNames.of(settings).work

    async def enqueue(self, item: WorkItem) -> None:
        """Publish `item` to its lane and user; returns once the server stored it."""
        await self._js.publish(
            subjects.work_subject(item.lane, item.user_id, self._settings.subject_prefix),
            encode(item),
            timeout=self._settings.publish_timeout_s,
            stream=self._stream,
            headers=self._tracing.headers({"Nats-Msg-Id": item.item_id}),
        )
