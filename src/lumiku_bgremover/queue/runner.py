"""The keyed work queue: partitioned pull consumers, the interactive lane first, users in turn.

Each (lane, partition) durable consumer gets a `Feed` that keeps at most one
message fetched ahead and heartbeats it (`in_progress`) while it waits, so a
message never reaches its ack deadline (or its delivery limit) just by queueing
here. A scheduler takes the next message from the interactive feeds first, then
the bulk feeds, each lane in round-robin over its partitions, whenever one of
`concurrency` slots is free. A message is acked only after the processor has
returned (its result and state durable); a failure is nak'ed with a growing
delay; on its last delivery the processor is asked to give the item up (a
failed, refunded item), and the `DeadLetterMover` does the same for items whose
last delivery ended without an answer (a killed worker).

A failure that the `Gate` confirms as a dependency outage (database, object store,
NATS down) is not a failure of the item: the gate closes, feeds stop fetching,
slots stop starting items, and the item in hand waits, heartbeated, until the gate
reopens, then runs again on the same delivery. An outage spends no delivery.

FastStream's subscribers are not used here: they cannot take turns across
consumers. Everything else (requests, quotes) stays a FastStream subscriber.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from lumiku_bgremover.contracts.codec import ContractError, decode
from lumiku_bgremover.contracts.codes import FailCode
from lumiku_bgremover.contracts.work import WorkItem
from lumiku_bgremover.provisioning import StreamNames
from lumiku_bgremover.queue.base import Delivery, Processor
from lumiku_bgremover.queue.gate import AlwaysUp, Gate
from lumiku_bgremover.queue.scheduling import LANE_ORDER, backoff_delay, pick
from lumiku_bgremover.settings import Limits, NatsSettings

log = logging.getLogger(__name__)

#: Pause after an unexpected error of a fetch loop (server restarting, connection lost).
RECOVER_S = 1.0
#: Times an item runs again at once, per delivery, after an outage-looking error whose
#: dependencies all answered (a reset connection, a JetStream stream electing a leader).
BLIP_RETRIES = 1


class Feed:
    """One consumer's prefetcher: at most one message ahead, heartbeated while it waits."""

    def __init__(
        self,
        sub: JetStreamContext.PullSubscription,
        wakeup: asyncio.Event,
        *,
        poll_s: float,
        heartbeat_s: float,
        gate: Gate | None = None,
    ) -> None:
        self._sub = sub
        self._gate: Gate = gate or AlwaysUp()
        self._wakeup = wakeup
        self._poll_s = poll_s
        self._heartbeat_s = heartbeat_s
        self._taken = asyncio.Event()
        self.message: Msg | None = None
        #: Set before the task is cancelled: asyncio.wait_for on 3.11 can swallow a cancel.
        self.stopping = False

    def take(self) -> Msg:
        """Hand the waiting message over to a worker slot."""
        assert self.message is not None
        message, self.message = self.message, None
        self._taken.set()
        return message

    async def run(self) -> None:
        """Fetch, wait until taken (heartbeating), repeat; until stopped."""
        while not self.stopping:
            try:
                if self.message is None:
                    await self._gate.wait_up()  # back-pressure: take nothing while down
                    await self._fetch()
                else:
                    await self._hold()
            except Exception:  # a partition must never stop being served
                log.warning("work feed error; retrying in %.0f s", RECOVER_S, exc_info=True)
                await asyncio.sleep(RECOVER_S)

    async def close(self) -> None:
        """Return a waiting message and stop the subscription (after `run` is cancelled)."""
        await self.release()
        with contextlib.suppress(Exception):
            await self._sub.unsubscribe()

    async def _fetch(self) -> None:
        try:
            messages = await self._sub.fetch(1, timeout=self._poll_s)
        except nats.errors.TimeoutError:
            return
        self._taken.clear()
        self.message = messages[0]
        self._wakeup.set()

    async def _hold(self) -> None:
        try:
            await asyncio.wait_for(self._taken.wait(), self._heartbeat_s)
        except TimeoutError:
            if self.message is not None:
                await self.message.in_progress()

    async def release(self) -> None:
        """Give a message that was never started back to the queue at once."""
        if self.message is not None:
            message, self.message = self.message, None
            await message.nak()


async def cancel_all(tasks: set[asyncio.Task[None]], *, patience_s: float = 1.0) -> None:
    """Cancel `tasks` and wait for them, cancelling again any that shrugged a cancel off.

    On Python 3.11 `asyncio.wait_for` can lose a cancellation that races with the
    awaited result; the loops also check a stop flag, and this retries the cancel.
    """
    pending = set(tasks)
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=patience_s)


@contextlib.asynccontextmanager
async def heartbeat(message: Msg, interval_s: float) -> AsyncIterator[None]:
    """Tell JetStream every `interval_s` that `message` is still being worked on."""

    async def beat() -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await message.in_progress()
            except Exception as error:  # noqa: BLE001 (NATS away: the work goes on)
                log.warning("heartbeat of %s not sent: %r", message.subject, error)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class WorkQueueRunner:
    """Serves the work queue with `limits.worker_concurrency` slots."""

    def __init__(
        self,
        js: JetStreamContext,
        settings: NatsSettings,
        limits: Limits,
        processor: Processor,
        *,
        poll_s: float = 5.0,
        heartbeat_s: float | None = None,
        jitter: Callable[[], float] = lambda: random.uniform(-0.2, 0.2),  # noqa: S311
        gate: Gate | None = None,
    ) -> None:
        self._js, self._settings, self._limits = js, settings, limits
        self._gate: Gate = gate or AlwaysUp()
        self._processor = processor
        self._poll_s, self._jitter = poll_s, jitter
        self._heartbeat_s = heartbeat_s or limits.work_ack_wait_s / 3
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(limits.worker_concurrency)
        self._feeds: list[list[Feed]] = []
        self._cursors = [0 for _ in LANE_ORDER]
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._stop_requested = asyncio.Event()

    async def start(self) -> None:
        """Bind to every partition's durable consumer and start serving."""
        names = StreamNames.of(self._settings)
        for lane in LANE_ORDER:
            feeds = []
            for partition in range(self._limits.work_partitions):
                sub = await self._js.pull_subscribe_bind(
                    durable=names.work_consumer(lane, partition), stream=names.work
                )
                feed = Feed(sub, self._wakeup, poll_s=self._poll_s,
                            heartbeat_s=self._heartbeat_s, gate=self._gate)  # fmt: skip
                feeds.append(feed)
            self._feeds.append(feeds)
        self._spawn(self._schedule(), self._tasks)
        for feed in (f for lane in self._feeds for f in lane):
            self._spawn(feed.run(), self._tasks)

    async def stop(self, timeout_s: float = 30.0) -> None:
        """Stop taking work, return waiting messages, let in-flight items finish for up to
        `timeout_s` (WORK_DRAIN_S), then NAK those still running."""
        self._stopping = True
        self._stop_requested.set()  # items waiting out an outage give their message back now
        for feed in (f for lane in self._feeds for f in lane):
            feed.stopping = True
        await cancel_all(self._tasks)
        for feed in (f for lane in self._feeds for f in lane):
            await feed.close()
        if self._in_flight:
            _, late = await asyncio.wait(self._in_flight, timeout=timeout_s)
            for task in late:
                task.cancel()  # its handler naks the message (see _handle)
            await asyncio.gather(*late, return_exceptions=True)

    def _spawn(self, coro: object, into: set[asyncio.Task[None]]) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)  # type: ignore[arg-type]
        into.add(task)
        task.add_done_callback(into.discard)

    async def _schedule(self) -> None:
        while not self._stopping:
            await self._slots.acquire()
            await self._gate.wait_up()
            message = await self._next_message()
            self._spawn(self._run_slot(message), self._in_flight)

    async def _next_message(self) -> Msg:
        while True:
            ready = [[feed.message is not None for feed in lane] for lane in self._feeds]
            chosen = pick(ready, self._cursors)
            if chosen is not None:
                lane, partition = chosen
                return self._feeds[lane][partition].take()
            self._wakeup.clear()
            await self._wakeup.wait()

    async def _run_slot(self, message: Msg) -> None:
        try:
            await self._handle(message)
        finally:
            self._slots.release()

    async def _handle(self, message: Msg) -> None:
        try:
            item = decode(WorkItem, message.data)
        except ContractError:
            log.exception(
                "work message %s is not a WorkItem: %r; terminated",
                message.subject,
                message.data[:500],
            )
            await message.term()
            return
        delivered = message.metadata.num_delivered
        delivery = Delivery(
            item=item,
            attempt=delivered,
            last=delivered >= self._limits.max_deliver,
            stream_seq=message.metadata.sequence.stream,
            headers=message.headers or {},
        )
        await self._settle(message, delivery)

    async def _settle(self, message: Msg, delivery: Delivery) -> None:
        try:
            async with heartbeat(message, self._heartbeat_s):
                error = await self._outlasting_outages(lambda: self._processor.process(delivery))
        except asyncio.CancelledError:
            await message.nak()  # shutting down: someone else takes it now
            raise
        if error is not None:
            await self._failed(message, delivery, error)
            return
        await message.ack()

    async def _outlasting_outages(self, step: Callable[[], Awaitable[None]]) -> Exception | None:
        """Run `step` until it succeeds (None) or fails for a reason other than an outage.

        An outage-looking error whose dependencies all answer when probed (a blip) runs
        `step` again at once, `BLIP_RETRIES` times per delivery, before it counts.
        """
        blips = 0
        while True:
            try:
                await step()
            except Exception as error:  # noqa: BLE001 (classified here, retried or given up)
                if await self._gate.down(error):
                    log.warning("item waits for its dependencies: %r", error)
                    await self._until_up_or_stopped()
                elif self._gate.candidate(error) and blips < BLIP_RETRIES:
                    blips += 1
                    log.warning("item runs again after a dependency blip: %r", error)
                else:
                    return error
            else:
                return None

    async def _until_up_or_stopped(self) -> None:
        """Wait for the gate to open; a stop request cancels the wait (the message is nak'ed)."""
        up = asyncio.ensure_future(self._gate.wait_up())
        stop = asyncio.ensure_future(self._stop_requested.wait())
        try:
            done, _ = await asyncio.wait({up, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            up.cancel()
            stop.cancel()
        if up not in done:
            raise asyncio.CancelledError

    async def _failed(self, message: Msg, delivery: Delivery, error: Exception) -> None:
        item = delivery.item
        if not delivery.last:
            delay = backoff_delay(delivery.attempt, jitter=self._jitter())
            log.warning(
                "item %s attempt %d failed (%s); retry in %.1f s",
                item.item_id,
                delivery.attempt,
                error,
                delay,
            )
            await message.nak(delay=delay)
            return
        log.error("item %s failed on its last delivery: %s", item.item_id, error)

        async def give_up() -> None:
            await self._processor.give_up(
                item,
                code=FailCode.MAX_DELIVERIES,
                message=f"gave up after {delivery.attempt} attempts: {error}",
            )

        async with heartbeat(message, self._heartbeat_s):
            problem = await self._outlasting_outages(give_up)
        if problem is not None:
            log.error("could not give item %s up (%r); the dead-letter mover will",
                      item.item_id, problem)  # fmt: skip
            await message.nak()
            return
        await message.ack()
