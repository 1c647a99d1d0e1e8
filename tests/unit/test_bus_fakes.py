"""The in-memory publisher and work queue behave as their JetStream counterparts do."""

from datetime import UTC, datetime

import pytest

from lumiku_bgremover.contracts import BatchProgress, ImageRef, OutputOptions, WorkItem, subjects
from lumiku_bgremover.contracts.cloudevents import stable_event_id
from lumiku_bgremover.contracts.common import RequestMode, Tier
from lumiku_bgremover.contracts.work import Lane
from lumiku_bgremover.pipeline.events import SOURCE, InMemoryPublisher
from lumiku_bgremover.queue import InMemoryWorkQueue

NOW = datetime(2025, 1, 31, tzinfo=UTC)


def progress(succeeded: int) -> BatchProgress:
    return BatchProgress(batch_id="b1", user_id="u", total=3, succeeded=succeeded, failed=0,
                         cancelled=0, updated_at=NOW)  # fmt: skip


async def test_the_publisher_keeps_one_event_per_id_as_jetstream_deduplicates() -> None:
    events = InMemoryPublisher()
    first = await events.publish(subjects.BATCH_PROGRESS, progress(1), key="b1:1")
    again = await events.publish(subjects.BATCH_PROGRESS, progress(1), key="b1:1")
    await events.publish(subjects.BATCH_PROGRESS, progress(2), key="b1:2")
    assert first == again == stable_event_id(subjects.BATCH_PROGRESS, "b1:1")
    assert [e["succeeded"] for e in events.of(subjects.BATCH_PROGRESS)] == [1, 2]


async def test_a_failing_publisher_raises_and_keeps_nothing() -> None:
    events = InMemoryPublisher(fail_with=ConnectionError("down"))
    with pytest.raises(ConnectionError):
        await events.publish(subjects.BATCH_PROGRESS, progress(1), key="k")
    assert events.events == []


def work(item_id: str) -> WorkItem:
    return WorkItem(
        item_id=item_id, batch_id="b1", user_id="u", index=0, tier=Tier.BASIC,
        mode=RequestMode.BATCH, filename="a.png",
        ref=ImageRef(bucket="bkt", key="originals/u/a.png"), options=OutputOptions(),
        lane=Lane.BULK, enqueued_at=NOW,
    )  # fmt: skip


async def test_the_queue_stores_an_item_id_once() -> None:
    queue = InMemoryWorkQueue()
    for item_id in ("i1", "i2", "i1"):
        await queue.enqueue(work(item_id))
    assert queue.ids() == ["i1", "i2"]


def test_the_one_ce_source() -> None:
    assert SOURCE == "/lumiku/bgremover"
