"""Operations on the real servers: queue pause/resume, dead letters, bucket expiry, cleanup."""

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import nats.errors
import pytest
from minio import Minio
from nats.aio.client import Client
from nats.js import JetStreamContext

from lumiku_bgremover.contracts.codec import decode
from lumiku_bgremover.contracts.work import Lane, WorkItem
from lumiku_bgremover.db import connect
from lumiku_bgremover.operations import queue as ops
from lumiku_bgremover.operations.cleanup import count_finished, delete_finished
from lumiku_bgremover.operations.deadletters import Replay, list_dead_letters, replay
from lumiku_bgremover.provisioning import StreamNames, provision_streams
from lumiku_bgremover.queue import JetStreamWorkQueue, partition_of
from lumiku_bgremover.settings import Limits, NatsSettings, RetentionSettings, S3Settings
from lumiku_bgremover.storage import S3ObjectStore
from lumiku_bgremover.storage.lifecycle import RULE_ID_PREFIX, expiry_rules
from tests.fixtures.s3 import S3Server

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).parents[2] / "contracts" / "examples" / "WorkItem.json"
LIMITS = Limits(work_partitions=2, max_deliver=1)
DEADLINE_S = 10.0


def nats_settings(namespace: str) -> NatsSettings:
    return NatsSettings(subject_prefix=f"{namespace}.", stream_prefix=namespace.upper())


def work_item(number: int, lane: Lane = Lane.BULK) -> WorkItem:
    item = decode(WorkItem, EXAMPLE.read_bytes())
    return msgspec.structs.replace(
        item, item_id=f"{item.batch_id}:{number}", index=number, lane=lane
    )


async def until(predicate: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll `predicate` until it holds, failing after DEADLINE_S."""
    deadline = asyncio.get_running_loop().time() + DEADLINE_S
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"not within {DEADLINE_S} s: {what}")
        await asyncio.sleep(0.02)


async def provisioned(nc: Client, namespace: str) -> tuple[JetStreamContext, NatsSettings]:
    settings = nats_settings(namespace)
    js = nc.jetstream()
    await provision_streams(js, settings, LIMITS)
    return js, settings


def consumer_of(settings: NatsSettings, item: WorkItem) -> str:
    return StreamNames.of(settings).work_consumer(item.lane, partition_of(item.user_id, 2))


async def pending(js: JetStreamContext, settings: NatsSettings, consumer: str) -> int:
    info = await js.consumer_info(StreamNames.of(settings).work, consumer)
    return info.num_pending or 0


async def test_pause_stops_deliveries_until_resume(nc: Client, nats_namespace: str) -> None:
    js, settings = await provisioned(nc, nats_namespace)
    item = work_item(1)
    consumer = consumer_of(settings, item)
    paused = await ops.pause(js, settings, LIMITS, [Lane.BULK])
    assert consumer in paused
    await provision_streams(js, settings, LIMITS)  # a restart re-provisions: still paused
    await JetStreamWorkQueue(js, settings).enqueue(item)
    await until(lambda: _is(pending(js, settings, consumer), 1), "the item is stored")
    sub = await js.pull_subscribe_bind(durable=consumer, stream=StreamNames.of(settings).work)

    with pytest.raises(nats.errors.TimeoutError):
        await sub.fetch(1, timeout=0.5)
    states = await ops.work_consumers(js, settings, LIMITS)
    assert {s.name for s in states if s.paused} == set(paused)
    assert ops.lag_by_lane(states) == {Lane.INTERACTIVE: 0, Lane.BULK: 1}

    await ops.resume(js, settings, LIMITS, [Lane.BULK])
    [message] = await sub.fetch(1, timeout=DEADLINE_S)
    assert decode(WorkItem, message.data).item_id == item.item_id
    await message.ack()
    assert not any(s.paused for s in await ops.work_consumers(js, settings, LIMITS))


async def _is(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


async def test_pause_of_one_lane_leaves_the_other(nc: Client, nats_namespace: str) -> None:
    js, settings = await provisioned(nc, nats_namespace)
    until_time = datetime.now(UTC) + timedelta(hours=1)
    await ops.pause(js, settings, LIMITS, [Lane.INTERACTIVE], until=until_time)
    states = await ops.work_consumers(js, settings, LIMITS)
    assert {s.lane for s in states if s.paused} == {Lane.INTERACTIVE}
    assert len([s for s in states if s.paused]) == LIMITS.work_partitions


async def test_dead_letters_are_listed_and_replayed(nc: Client, nats_namespace: str) -> None:
    js, settings = await provisioned(nc, nats_namespace)
    item = work_item(2)
    consumer = consumer_of(settings, item)
    await JetStreamWorkQueue(js, settings).enqueue(item)
    sub = await js.pull_subscribe_bind(durable=consumer, stream=StreamNames.of(settings).work)
    [message] = await sub.fetch(1, timeout=DEADLINE_S)
    await message.nak()
    with pytest.raises(nats.errors.TimeoutError):  # asked again, the server gives up instead
        await sub.fetch(1, timeout=1)

    async def one_letter() -> bool:
        return len(await list_dead_letters(js, settings)) == 1

    await until(one_letter, "the max-deliveries advisory is captured")
    [letter] = await list_dead_letters(js, settings)
    assert (letter.consumer, letter.item) == (consumer, item)

    assert await replay(js, settings, letter.seq) is Replay.REQUEUED
    [again] = await sub.fetch(1, timeout=DEADLINE_S)
    assert decode(WorkItem, again.data) == item
    assert again.metadata.num_delivered == 1
    assert await list_dead_letters(js, settings) == []
    assert await replay(js, settings, letter.seq) is Replay.GONE


async def test_provision_sets_expiry_rules_and_keeps_foreign_ones(
    s3_server: S3Server, make_s3_settings: Callable[..., Awaitable[S3Settings]]
) -> None:
    store = S3ObjectStore.from_settings(await make_s3_settings())
    client: Minio = s3_server.client()
    retention = RetentionSettings(results_days=30, archives_days=14, originals_days=0)

    await store.apply_retention(expiry_rules(retention))
    config = await asyncio.to_thread(client.get_bucket_lifecycle, store.bucket)
    assert config is not None
    expiring = {r.rule_filter.prefix: r.expiration.days for r in config.rules if r.expiration}
    assert expiring == {"results/": 30, "archives/": 14, "engine-inputs/": 1}
    assert all(r.rule_id.startswith(RULE_ID_PREFIX) for r in config.rules)

    await store.apply_retention(expiry_rules(RetentionSettings(originals_days=7)))
    config = await asyncio.to_thread(client.get_bucket_lifecycle, store.bucket)
    assert config is not None
    assert {r.rule_filter.prefix: r.expiration.days for r in config.rules if r.expiration} == {
        "originals/": 7,
        "engine-inputs/": 1,
    }

    await store.apply_retention(())
    assert await asyncio.to_thread(client.get_bucket_lifecycle, store.bucket) is None
    assert await store.bucket_exists()


async def _batch(conn, batch_id: str, status: str, completed_days_ago: float | None) -> None:
    completed = None
    if completed_days_ago is not None:
        completed = datetime.now(UTC) - timedelta(days=completed_days_ago)
    await conn.execute(
        "INSERT INTO batches (id, request_id, user_id, tier, status, total_items,"
        " credits_per_image, base_total, completed_at)"
        " VALUES ($1, $1, 'u1', 'basic', $2, 1, 3, 3, $3)",
        batch_id, status, completed,
    )  # fmt: skip
    await conn.execute(
        "INSERT INTO batch_items (id, batch_id, idx, filename, source)"
        " VALUES ($1 || ':0', $1, 0, 'a.png', '{}'::jsonb)",
        batch_id,
    )


async def test_cleanup_deletes_only_old_finished_batches(migrated_database_url: str) -> None:
    async with connect(migrated_database_url) as conn:
        await _batch(conn, "old-done", "completed", 40)
        await _batch(conn, "old-cancelled", "cancelled", 35)
        await _batch(conn, "old-partial", "partial", 33)
        await _batch(conn, "old-failed", "failed", 31)
        await _batch(conn, "recent-done", "completed", 2)
        await _batch(conn, "still-running", "processing", None)
        await _batch(conn, "finalizing", "finalizing", None)
        before = datetime.now(UTC) - timedelta(days=30)

        counted = await count_finished(conn, before)
        deleted = await delete_finished(conn, before, chunk=1)

        assert (counted.batches, counted.items) == (4, 4)
        assert (deleted.batches, deleted.items) == (4, 4)
        left = {r["id"] for r in await conn.fetch("SELECT id FROM batches")}
        assert left == {"recent-done", "still-running", "finalizing"}
        assert await conn.fetchval("SELECT count(*) FROM batch_items") == 3
