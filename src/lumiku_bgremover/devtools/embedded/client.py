"""What another Lumiku app does with the service, for the demo: upload originals,
publish a batch request, follow its events, and fetch what it produced.

Everything goes through the public contracts: JetStream for the request, the event
subjects (core NATS subscription) for the answers, the object store for the bytes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from lumiku_bgremover import billing, db, messaging
from lumiku_bgremover.contracts import (
    BatchAccepted,
    BatchCompleted,
    BatchProgress,
    BatchRequested,
    ContractError,
    ImageRef,
    ItemDone,
    ItemFailed,
    RequestRejected,
    decode,
    encode,
)
from lumiku_bgremover.contracts import subjects as subj
from lumiku_bgremover.settings import Settings
from lumiku_bgremover.storage import ObjectStore, build_object_store

__all__ = [
    "AppClient",
    "BatchEvent",
    "BatchOutcome",
    "BatchWatch",
    "app_client",
    "wait_answering",
]

BatchEvent = (
    BatchAccepted | RequestRejected | ItemDone | ItemFailed | BatchProgress | BatchCompleted
)

#: The events a client follows, by base subject.
EVENT_TYPES: dict[str, type[BatchEvent]] = {
    subj.BATCH_ACCEPTED: BatchAccepted,
    subj.REQUEST_REJECTED: RequestRejected,
    subj.ITEM_DONE: ItemDone,
    subj.ITEM_FAILED: ItemFailed,
    subj.BATCH_PROGRESS: BatchProgress,
    subj.BATCH_COMPLETED: BatchCompleted,
}


@dataclass(slots=True)
class BatchOutcome:
    """Every event of one request, in arrival order, sorted by kind."""

    request_id: str
    accepted: BatchAccepted | None = None
    rejected: RequestRejected | None = None
    done: list[ItemDone] = field(default_factory=list)
    failed: list[ItemFailed] = field(default_factory=list)
    progress: list[BatchProgress] = field(default_factory=list)
    completed: BatchCompleted | None = None
    wall_s: float = 0.0

    @property
    def finished(self) -> bool:
        """Completed or rejected: no more events will come."""
        return self.completed is not None or self.rejected is not None


class BatchWatch:
    """Collects the events of one request; calls `on_event` with each one that counts."""

    def __init__(
        self, request_id: str, on_event: Callable[[BatchEvent], None] | None = None
    ) -> None:
        self.outcome = BatchOutcome(request_id)
        self._on_event = on_event
        self._pending: list[ItemDone | ItemFailed | BatchProgress] = []
        self.changed = asyncio.Event()

    def _ours(self, event: BatchEvent) -> bool:
        if isinstance(event, BatchAccepted | RequestRejected | BatchCompleted):
            return event.request_id == self.outcome.request_id
        accepted = self.outcome.accepted
        if accepted is None:  # an item before its batch's acceptance: keep it for later
            self._pending.append(event)
            return False
        return event.batch_id == accepted.batch_id

    def add(self, event: BatchEvent) -> None:
        """Record `event` when it belongs to this request."""
        if not self._ours(event):
            return
        self._record(event)
        if isinstance(event, BatchAccepted):
            pending, self._pending = self._pending, []
            for early in pending:
                self.add(early)
        self.changed.set()

    def _record(self, event: BatchEvent) -> None:
        out = self.outcome
        match event:
            case BatchAccepted():
                out.accepted = event
            case RequestRejected():
                out.rejected = event
            case ItemDone():
                out.done.append(event)
            case ItemFailed():
                out.failed.append(event)
            case BatchProgress():
                out.progress.append(event)
            case BatchCompleted():
                out.completed = event
        if self._on_event is not None:
            self._on_event(event)

    async def until_finished(self, timeout_s: float) -> BatchOutcome:
        """The outcome once completed or rejected; `TimeoutError` after `timeout_s`."""
        async with asyncio.timeout(timeout_s):
            while not self.outcome.finished:
                self.changed.clear()
                await self.changed.wait()
        return self.outcome


@dataclass(slots=True)
class AppClient:
    """A connected client app: NATS, the object store and (for grants) the database."""

    settings: Settings
    nc: Client
    store: ObjectStore
    watches: list[BatchWatch] = field(default_factory=list)

    async def on_message(self, msg: Msg) -> None:
        """Hand an event to every batch being watched (the subscription's callback)."""
        base = msg.subject.removeprefix(self.settings.nats.subject_prefix)
        kind = EVENT_TYPES.get(base)
        if kind is None:
            return
        try:
            event = decode(kind, msg.data)
        except ContractError:
            return  # not ours to judge; the service's own tests check its events
        for watch in self.watches:
            watch.add(event)

    async def grant(self, user_id: str, amount: int, *, key: str) -> int:
        """Give `user_id` credits once per `key` (billing API); the new balance."""
        async with db.connect(self.settings.require_database().url) as conn:
            await billing.grant(conn, user_id, amount, idempotency_key=key)
            return await billing.balance(conn, user_id)

    async def balance(self, user_id: str) -> int:
        """`user_id`'s credit balance."""
        async with db.connect(self.settings.require_database().url) as conn:
            return await billing.balance(conn, user_id)

    async def upload(self, key: str, data: bytes, content_type: str) -> ImageRef:
        """Store an original; its reference for a request."""
        await self.store.put_bytes(key, data, content_type)
        return ImageRef(bucket=self.store.bucket, key=key)

    async def run_batch(
        self,
        request: BatchRequested,
        *,
        timeout_s: float,
        on_event: Callable[[BatchEvent], None] | None = None,
    ) -> BatchOutcome:
        """Publish `request` and follow it until completed or rejected."""
        watch = BatchWatch(request.request_id, on_event)
        self.watches.append(watch)
        subject = subj.with_prefix(self.settings.nats.subject_prefix, subj.BATCH_REQUESTED)
        started = time.perf_counter()
        try:
            await self.nc.jetstream().publish(
                subject, encode(request), headers={"Nats-Msg-Id": request.request_id}
            )
            outcome = await watch.until_finished(timeout_s)
        finally:
            self.watches.remove(watch)
        outcome.wall_s = time.perf_counter() - started
        return outcome

    async def fetch(self, bucket: str, key: str) -> bytes:
        """An object's bytes (a result or the archive), however large it is."""
        info = await self.store.stat(key, bucket=bucket)
        return await self.store.get_bytes(key, bucket=bucket, max_bytes=max(info.size, 1))


@asynccontextmanager
async def app_client(settings: Settings) -> AsyncIterator[AppClient]:
    """A client connected to `settings`' NATS, listening to the service's events."""
    nc = await messaging.connect(settings.nats, name=f"{messaging.CLIENT_NAME}-demo-client")
    try:
        client = AppClient(settings, nc, build_object_store(settings.storage))
        await nc.subscribe(f"{settings.nats.subject_prefix}bgremove.>", cb=client.on_message)
        await nc.flush()
        yield client
    finally:
        await nc.close()


async def wait_answering(nc: Client, subject: str, timeout_s: float = 10.0) -> None:
    """Until a responder answers on `subject` (any answer, even an error reply)."""
    async with asyncio.timeout(timeout_s):
        while True:
            try:
                await nc.request(subject, b"{}", timeout=2)
            except nats.errors.NoRespondersError:
                await asyncio.sleep(0.02)
            else:
                return
