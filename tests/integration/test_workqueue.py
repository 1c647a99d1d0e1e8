"""The keyed work queue on a real JetStream server."""

import asyncio
import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from nats.aio.client import Client

from lumiku_bgremover.contracts import ImageRef, OutputOptions, WorkItem
from lumiku_bgremover.contracts.codes import FailCode
from lumiku_bgremover.contracts.common import RequestMode, Tier
from lumiku_bgremover.contracts.work import Lane
from lumiku_bgremover.provisioning import StreamNames, provision_streams, work_consumer_configs
from lumiku_bgremover.queue import (
    DeadLetterMover,
    Delivery,
    JetStreamWorkQueue,
    WorkQueueRunner,
    partition_of,
)
from lumiku_bgremover.settings import Limits, NatsSettings, S3Settings
from tests.integration.service import running_app, service_settings

pytestmark = pytest.mark.integration


def item(user: str, index: int, lane: Lane = Lane.BULK, batch: str = "b1") -> WorkItem:
    return WorkItem(
        item_id=f"{batch}-{user}-{index}",
        batch_id=f"{batch}-{user}",
        user_id=user,
        index=index,
        tier=Tier.BASIC,
        mode=RequestMode.BATCH,
        filename=f"{index}.png",
        ref=ImageRef(bucket="lumiku-bgremover", key=f"originals/{user}/{index}.png"),
        options=OutputOptions(),
        lane=lane,
        enqueued_at=datetime.now(UTC),
    )


@dataclasses.dataclass
class Recorder:
    """A processor that records what it saw, with a fixed delay and scripted failures."""

    delay_s: float = 0.0
    fail_times: dict[str, int] = dataclasses.field(default_factory=dict)
    done: list[str] = dataclasses.field(default_factory=list)
    attempts: list[tuple[str, int, bool]] = dataclasses.field(default_factory=list)
    given_up: list[tuple[str, FailCode]] = dataclasses.field(default_factory=list)
    finished: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    changed: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    expect: int = 0

    async def process(self, delivery: Delivery) -> None:
        item_id = delivery.item.item_id
        self.attempts.append((item_id, delivery.attempt, delivery.last))
        await asyncio.sleep(self.delay_s)
        if self.fail_times.get(item_id, 0) >= delivery.attempt:
            raise RuntimeError(f"scripted failure {delivery.attempt}")
        self.done.append(item_id)
        self._check()

    async def give_up(self, item: WorkItem, *, code: FailCode, message: str) -> None:
        assert message
        self.given_up.append((item.item_id, code))
        self._check()

    def _check(self) -> None:
        self.changed.set()
        if len(self.done) + len(self.given_up) >= self.expect:
            self.finished.set()


@pytest.fixture
def settings(nats_namespace: str) -> NatsSettings:
    return NatsSettings(subject_prefix=f"{nats_namespace}.", stream_prefix=nats_namespace.upper())


@pytest.fixture
async def provisioned(nc: Client, settings: NatsSettings) -> None:
    await provision_streams(nc.jetstream(), settings, Limits(work_partitions=4, max_deliver=3))


async def run_queue(
    nc: Client, settings: NatsSettings, recorder: Recorder, *, concurrency: int = 1, **kw: float
) -> WorkQueueRunner:
    limits = Limits(work_partitions=4, max_deliver=3, worker_concurrency=concurrency)
    runner = WorkQueueRunner(
        nc.jetstream(), settings, limits, recorder, poll_s=0.5, jitter=lambda: 0.0, **kw
    )
    await runner.start()
    return runner


async def until(recorder: Recorder, condition: Callable[[], bool], timeout_s: float = 20) -> None:
    """Wait until `condition` holds, re-checking whenever the recorder saw an item end."""
    async with asyncio.timeout(timeout_s):
        while not condition():
            recorder.changed.clear()
            await recorder.changed.wait()


async def stream_is_empty(nc: Client, settings: NatsSettings) -> bool:
    """True once the work stream holds nothing (acks are fire-and-forget: allow them 5 s)."""
    for _ in range(50):
        info = await nc.jetstream().stream_info(StreamNames.of(settings).work)
        if info.state.messages == 0:
            return True
        await asyncio.sleep(0.1)
    return False


@pytest.mark.usefixtures("provisioned")
async def test_items_are_processed_once_and_acked(nc: Client, settings: NatsSettings) -> None:
    js = nc.jetstream()
    items = [item(f"u{n % 3}", n) for n in range(12)]
    for work in items + items[:4]:  # a re-publish is de-duplicated by Nats-Msg-Id
        await JetStreamWorkQueue(js, settings).enqueue(work)
    recorder = Recorder(expect=12)
    runner = await run_queue(nc, settings, recorder, concurrency=3)
    try:
        await asyncio.wait_for(recorder.finished.wait(), 20)
    finally:
        await runner.stop()
    assert sorted(recorder.done) == sorted(w.item_id for w in items)
    assert await stream_is_empty(nc, settings)


@pytest.mark.usefixtures("provisioned")
async def test_interactive_lane_goes_before_a_bulk_backlog(
    nc: Client, settings: NatsSettings
) -> None:
    js = nc.jetstream()
    for n in range(30):
        await JetStreamWorkQueue(js, settings).enqueue(item("alice", n))
    recorder = Recorder(delay_s=0.05, expect=31)
    runner = await run_queue(nc, settings, recorder)
    try:
        await until(recorder, lambda: len(recorder.done) >= 3)  # the bulk backlog is being served
        before = len(recorder.done)
        single = item("bob", 0, Lane.INTERACTIVE, batch="single")
        await JetStreamWorkQueue(js, settings).enqueue(single)
        await asyncio.wait_for(recorder.finished.wait(), 30)
    finally:
        await runner.stop()
    position = recorder.done.index("single-bob-0")
    # the item in the one slot, the one fetched ahead, and a couple more (50 ms each) while
    # the interactive feed's fetch returns on a busy machine; without priority it is ~30
    assert position <= before + 4, (before, recorder.done)


@pytest.mark.usefixtures("provisioned")
async def test_users_in_different_partitions_take_turns(nc: Client, settings: NatsSettings) -> None:
    js = nc.jetstream()
    for n in range(40):
        await JetStreamWorkQueue(js, settings).enqueue(item("alice", n))
    bob = next(
        u
        for u in (f"user-{i}" for i in range(50))
        if partition_of(u, 4) != partition_of("alice", 4)
    )
    for n in range(5):
        await JetStreamWorkQueue(js, settings).enqueue(item(bob, n))
    recorder = Recorder(expect=45)
    runner = await run_queue(nc, settings, recorder)
    try:
        await asyncio.wait_for(recorder.finished.wait(), 30)
    finally:
        await runner.stop()
    last_bob = max(i for i, done in enumerate(recorder.done) if bob in done)
    assert last_bob < 15, recorder.done  # bob's 5 items alternate with alice's, not after 40


@pytest.mark.usefixtures("provisioned")
async def test_transient_failures_are_retried_with_growing_delays(
    nc: Client, settings: NatsSettings
) -> None:
    js = nc.jetstream()
    await JetStreamWorkQueue(js, settings).enqueue(item("carol", 0))
    recorder = Recorder(fail_times={"b1-carol-0": 2}, expect=1)
    started = asyncio.get_running_loop().time()
    runner = WorkQueueRunner(
        js,
        settings,
        Limits(work_partitions=4, max_deliver=3),
        recorder,
        poll_s=0.5,
        jitter=lambda: -0.9,  # delays of 0.2 s and 0.4 s
    )
    await runner.start()
    try:
        await asyncio.wait_for(recorder.finished.wait(), 20)
    finally:
        await runner.stop()
    assert recorder.attempts == [
        ("b1-carol-0", 1, False),
        ("b1-carol-0", 2, False),
        ("b1-carol-0", 3, True),
    ]
    assert recorder.done == ["b1-carol-0"]
    assert asyncio.get_running_loop().time() - started >= 0.6
    assert await stream_is_empty(nc, settings)


@pytest.mark.usefixtures("provisioned")
async def test_an_item_failing_every_delivery_is_given_up_once(
    nc: Client, settings: NatsSettings
) -> None:
    js = nc.jetstream()
    await JetStreamWorkQueue(js, settings).enqueue(item("dave", 0))
    recorder = Recorder(fail_times={"b1-dave-0": 99}, expect=1)
    runner = await run_queue(nc, settings, recorder, heartbeat_s=1.0)
    runner._jitter = lambda: -0.95  # short delays keep the test quick
    try:
        await asyncio.wait_for(recorder.finished.wait(), 20)
        await asyncio.sleep(0.5)
    finally:
        await runner.stop()
    assert [a[1] for a in recorder.attempts] == [1, 2, 3]
    assert recorder.given_up == [("b1-dave-0", FailCode.MAX_DELIVERIES)]
    assert recorder.done == []
    assert await stream_is_empty(nc, settings)


@pytest.mark.usefixtures("provisioned")
async def test_heartbeats_keep_a_slow_item_from_being_redelivered(
    nc: Client, settings: NatsSettings
) -> None:
    js = nc.jetstream()
    names = StreamNames.of(settings)
    for config in work_consumer_configs(settings, Limits(work_partitions=4, max_deliver=3)):
        await js.add_consumer(names.work, dataclasses.replace(config, ack_wait=1.0))
    await JetStreamWorkQueue(js, settings).enqueue(item("erin", 0))
    await JetStreamWorkQueue(js, settings).enqueue(item("erin", 1))
    recorder = Recorder(delay_s=2.5, expect=2)
    runner = await run_queue(nc, settings, recorder, heartbeat_s=0.3)
    try:
        await asyncio.wait_for(recorder.finished.wait(), 20)
    finally:
        await runner.stop()
    # the second item waited ~2.5 s in the feed and the first took 2.5 s: both past ack_wait
    assert sorted(recorder.attempts) == [("b1-erin-0", 1, False), ("b1-erin-1", 1, False)]


@pytest.mark.usefixtures("provisioned")
async def test_dead_letter_mover_gives_up_items_nobody_answered(
    nc: Client, settings: NatsSettings
) -> None:
    js = nc.jetstream()
    names = StreamNames.of(settings)
    durable = names.work_consumer(Lane.BULK, partition_of("frank", 4))
    config = next(
        c
        for c in work_consumer_configs(settings, Limits(work_partitions=4, max_deliver=3))
        if c.durable_name == durable
    )
    await js.add_consumer(names.work, dataclasses.replace(config, ack_wait=0.5, max_deliver=2))
    await JetStreamWorkQueue(js, settings).enqueue(item("frank", 0))
    sub = await js.pull_subscribe_bind(durable=config.durable_name, stream=names.work)
    for _ in range(2):  # a worker that takes the item and dies, twice
        (await sub.fetch(1, timeout=5))[0]
        await asyncio.sleep(0.7)
    with pytest.raises(TimeoutError):  # a live worker asks again: the server gives up instead
        await sub.fetch(1, timeout=1)
    recorder = Recorder(expect=1)
    mover = DeadLetterMover(js, settings, recorder, poll_s=0.5)
    await mover.start()
    try:
        await asyncio.wait_for(recorder.finished.wait(), 20)
        assert await stream_is_empty(nc, settings)  # deleted right after it was given up
    finally:
        await mover.stop()
    assert recorder.given_up == [("b1-frank-0", FailCode.MAX_DELIVERIES)]
    assert await stream_is_empty(nc, settings)


@dataclasses.dataclass
class Gated:
    """A processor whose items run until the test opens the gate."""

    gate: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    started: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    done: list[str] = dataclasses.field(default_factory=list)

    async def process(self, delivery: Delivery) -> None:
        self.started.set()
        await self.gate.wait()
        self.done.append(delivery.item.item_id)

    async def give_up(self, item: WorkItem, *, code: FailCode, message: str) -> None:
        raise AssertionError(f"gave up {item.item_id}: {code} {message}")


async def started_gated(nc: Client, settings: NatsSettings) -> tuple[WorkQueueRunner, Gated]:
    await JetStreamWorkQueue(nc.jetstream(), settings).enqueue(item("gus", 0))
    gated = Gated()
    limits = Limits(work_partitions=4, max_deliver=3)
    runner = WorkQueueRunner(nc.jetstream(), settings, limits, gated, poll_s=0.5)
    await runner.start()
    await asyncio.wait_for(gated.started.wait(), 20)
    return runner, gated


async def deliveries_of_the_queued_item(nc: Client, settings: NatsSettings) -> list[int]:
    """Delivery counts of what the work stream still holds for gus (fetched and NAKed)."""
    durable = StreamNames.of(settings).work_consumer(Lane.BULK, partition_of("gus", 4))
    sub = await nc.jetstream().pull_subscribe_bind(durable, StreamNames.of(settings).work)
    try:
        messages = await sub.fetch(1, timeout=10)
    except TimeoutError:
        return []
    finally:
        await sub.unsubscribe()
    for message in messages:
        await message.nak()
    return [m.metadata.num_delivered for m in messages]


@pytest.mark.usefixtures("provisioned")
async def test_a_stop_lets_the_item_in_flight_finish_within_the_drain(
    nc: Client, settings: NatsSettings
) -> None:
    runner, gated = await started_gated(nc, settings)
    stopping = asyncio.create_task(runner.stop(timeout_s=600))  # WORK_DRAIN_S
    await asyncio.sleep(0)  # one turn of the loop: the stop task runs up to its first wait
    assert not stopping.done()  # it waits for the item in flight
    gated.gate.set()  # the item finishes during the drain, and is acked
    await asyncio.wait_for(stopping, 30)
    assert gated.done == ["b1-gus-0"]
    assert await stream_is_empty(nc, settings)


@pytest.mark.usefixtures("provisioned")
async def test_a_stop_naks_the_item_still_running_after_the_drain(
    nc: Client, settings: NatsSettings
) -> None:
    runner, gated = await started_gated(nc, settings)
    await asyncio.wait_for(runner.stop(timeout_s=0.1), 30)  # the gate never opens
    assert gated.done == []
    assert await deliveries_of_the_queued_item(nc, settings) == [2]  # back, one delivery spent


async def test_the_service_drains_for_work_drain_s(
    nats_url: str,
    nats_namespace: str,
    migrated_database_url: str,
    s3_settings: S3Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    drains: list[float] = []
    stop = WorkQueueRunner.stop

    async def recorded(runner: WorkQueueRunner, timeout_s: float = 30.0) -> None:
        drains.append(timeout_s)
        await stop(runner, timeout_s)

    monkeypatch.setattr(WorkQueueRunner, "stop", recorded)
    settings = service_settings(nats_url, nats_namespace, migrated_database_url, s3_settings)
    limits = dataclasses.replace(settings.limits, work_drain_s=105.0)
    async with running_app(dataclasses.replace(settings, limits=limits)):
        assert drains == []
    assert drains == [105.0]
