"""Request-reply on a plain nats-py subscription: no FastStream path per message.

A quote is one query; FastStream's per-message path (middlewares, fast_depends, anyio
task groups) cost more than the quote itself (bench B3: 55 % of the event loop). A
`PlainResponder` hands each request's bytes to an `Answer` (bytes in, bytes out, errors
already turned into an `ErrorReply` by `replying.respond`) and sends what it returns.

- Replicas share the subject in a core-NATS queue group: each request is answered once.
- An `Answer` that raises all the same is logged and answered `internal_error`.
- At most `limit` answers run at once; while all are busy the subscription's callback
  waits, and nats-py holds further messages in its pending buffer.
- Each request gets a server span (a child of the caller's `traceparent`) and counts in
  `lumiku_bgremover_replies_total{subject}` (FastStream's subscriber metrics do not see
  these subjects).
- `stop` unsubscribes (at once, even while NATS is away: requests not yet started are
  dropped and their requesters time out), then lets the answers in flight finish,
  for up to `grace_s` (`STOP_GRACE_S` by default).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Final

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from opentelemetry.trace import SpanKind
from prometheus_client import Counter

from lumiku_bgremover.contracts import encode
from lumiku_bgremover.handlers.replying import internal_error
from lumiku_bgremover.observability.tracing import Tracing

__all__ = ["STOP_GRACE_S", "Answer", "PlainResponder"]

log = logging.getLogger(__name__)

#: Seconds `stop` waits for the answers in flight before cancelling them.
STOP_GRACE_S: Final = 5.0

#: Bytes of a request in, bytes of its reply out (never raises for a bad request).
Answer = Callable[[bytes], Awaitable[bytes]]


class PlainResponder:
    """Answers `subject` in the queue group `queue`, at most `limit` requests at once."""

    def __init__(
        self,
        nc: Client,
        subject: str,
        queue: str,
        answer: Answer,
        *,
        limit: int,
        tracing: Tracing | None = None,
        counter: Counter | None = None,
        grace_s: float = STOP_GRACE_S,
    ) -> None:
        self._nc = nc
        self._grace_s = grace_s
        self._subject = subject
        self._queue = queue
        self._answer = answer
        self._slots = asyncio.Semaphore(limit)
        self._tracing = tracing or Tracing()
        self._counted = counter.labels(subject=subject) if counter is not None else None
        self._tasks: set[asyncio.Task[None]] = set()
        self._subscription: Subscription | None = None

    @property
    def subject(self) -> str:
        """The subject answered (with the deployment prefix)."""
        return self._subject

    @property
    def queue(self) -> str:
        """The queue group shared with the other replicas."""
        return self._queue

    async def start(self) -> None:
        """Subscribe (the caller flushes the connection before announcing readiness)."""
        self._subscription = await self._nc.subscribe(
            self._subject, queue=self._queue, cb=self._on_message
        )

    async def stop(self) -> None:
        """Unsubscribe, wait up to `grace_s` for the answers in flight, cancel the rest."""
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            try:
                await subscription.unsubscribe()
            except nats.errors.Error as error:  # closed already: nothing more arrives
                log.debug("unsubscribing %s: %r", self._subject, error)
        if not self._tasks:
            return
        _, late = await asyncio.wait(set(self._tasks), timeout=self._grace_s)
        for task in late:  # stuck on a dependency: their requesters time out
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)

    async def _on_message(self, msg: Msg) -> None:
        await self._slots.acquire()
        task = asyncio.create_task(self._reply(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reply(self, msg: Msg) -> None:
        try:
            with self._tracing.span(self._subject, parent=msg.headers or {}, kind=SpanKind.SERVER):
                data = await self._answered(msg.data)
            if msg.reply:
                await msg.respond(data)
            if self._counted is not None:
                self._counted.inc()
        except Exception:  # the connection closed under us: the requester times out
            log.exception("could not send the reply on %s", self._subject)
        finally:
            self._slots.release()

    async def _answered(self, body: bytes) -> bytes:
        """The answer's bytes; `internal_error` should it raise after all."""
        try:
            return await self._answer(body)
        except Exception:
            log.exception("request on %s failed", self._subject)
            return encode(internal_error())
