"""Processing and completion on the in-memory bus: outcomes, refunds, the final row before
the event, and recovery of an announcement lost to a crash."""

from pathlib import Path

import asyncpg
import msgspec
import pytest

from lumiku_bgremover.contracts import subjects
from lumiku_bgremover.db import batches as repo
from lumiku_bgremover.engines.fake import FakeEngine
from lumiku_bgremover.pipeline.events import InMemoryPublisher
from lumiku_bgremover.pipeline.intake import batch_id_for
from lumiku_bgremover.pipeline.processor import ItemFailedError
from lumiku_bgremover.queue import Delivery
from tests.usecases.conftest import Wired, png, wire
from tests.usecases.test_intake import batch_body

pytestmark = pytest.mark.integration


class RowAtPublish(InMemoryPublisher):
    """Records, as each `batch.completed` goes out, what the database says of the batch."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__()
        self.pool = pool
        self.rows: list[repo.Batch] = []

    async def publish(self, subject: str, message: msgspec.Struct, *, key: str) -> str:
        if subject == subjects.BATCH_COMPLETED:
            async with self.pool.acquire() as conn:
                row = await repo.get_batch(conn, key)
            assert row is not None
            self.rows.append(row)
        return await super().publish(subject, message, key=key)


async def test_a_mixed_batch_ends_partial_with_the_row_final_before_the_event(
    db_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    events = RowAtPublish(db_pool)
    wired = wire(db_pool, tmp_path, events=events)
    await wired.grant("ann", 100)
    refs = [await wired.upload("ann", f"p{i}.png", png()) for i in range(3)]
    refs.append({"bucket": "lumiku-bgremover", "key": "originals/ann/missing.png"})
    refs.append(await wired.upload("ann", "junk.png", b"not an image at all"))
    await wired.intake.on_batch(batch_body("r-partial", "ann", refs))
    await wired.work_all()

    [completed] = wired.events.of(subjects.BATCH_COMPLETED)
    assert (completed["status"], completed["succeeded"], completed["failed"]) == ("partial", 3, 2)
    [row] = events.rows
    assert row.status is repo.BatchState.PARTIAL
    assert row.completed_at is not None
    # 4 images priced (the missing one never was): 32 credits; the undecodable one is refunded
    assert (completed["credits_charged"], completed["credits_refunded"]) == (32, 8)
    assert await wired.balance("ann") == 100 - 24
    assert {e["code"] for e in wired.events.of(subjects.ITEM_FAILED)} == {
        "source_not_found", "decode_failed"}  # fmt: skip
    async with db_pool.acquire() as conn:
        final = await repo.get_batch(conn, completed["batch_id"])
    assert final is not None
    assert final.completion_announced_at is not None


async def test_every_image_done_is_completed_and_zipped(wired: Wired) -> None:
    await wired.grant("bob", 100)
    refs = [await wired.upload("bob", f"p{i}.png", png()) for i in range(2)]
    await wired.intake.on_batch(batch_body("r-all", "bob", refs))
    await wired.work_all()
    [completed] = wired.events.of(subjects.BATCH_COMPLETED)
    assert (completed["status"], completed["credits_refunded"]) == ("completed", 0)
    assert completed["archive"]["key"].endswith(".zip")
    assert len(wired.events.of(subjects.ITEM_DONE)) == 2
    rows = await wired.pool.fetch(
        "SELECT engine, provider, model, cost_idr, engine_ms, engine_attempts, engine_fallback"
        " FROM batch_items WHERE batch_id = $1", completed["batch_id"],
    )  # fmt: skip
    made = {(r["engine"], r["provider"], r["model"], r["cost_idr"], r["engine_attempts"],
             r["engine_fallback"]) for r in rows}  # fmt: skip
    assert made == {("fake", "fake", "fake-matte", 0, 1, False)}
    assert all(r["engine_ms"] >= 0 for r in rows)


async def test_a_transient_engine_error_is_retried_then_given_up_and_refunded(
    db_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    wired = wire(db_pool, tmp_path, engine=FakeEngine(failure_rate=1.0, retryable=True))
    await wired.grant("cy", 100)
    await wired.intake.on_batch(
        batch_body("r-retry", "cy", [await wired.upload("cy", "a.png", png())])
    )
    [item] = wired.queue.items
    with pytest.raises(ItemFailedError):  # not the last delivery: raised, to be NAKed
        await wired.processor.process(Delivery(item, attempt=1, last=False, stream_seq=1))
    assert wired.events.of(subjects.ITEM_FAILED) == []
    await wired.processor.process(Delivery(item, attempt=5, last=True, stream_seq=1))
    [failed] = wired.events.of(subjects.ITEM_FAILED)
    assert failed["code"] == "engine_failed"
    [completed] = wired.events.of(subjects.BATCH_COMPLETED)
    assert (completed["status"], completed["credits_refunded"]) == ("failed", 8)
    assert await wired.balance("cy") == 100


async def test_a_redelivered_item_reannounces_and_changes_nothing(wired: Wired) -> None:
    await wired.grant("dee", 100)
    await wired.intake.on_batch(
        batch_body("r-redeliver", "dee", [await wired.upload("dee", "a.png", png())])
    )
    [item] = wired.queue.items
    await wired.work_all()
    before = list(wired.events.events)
    await wired.processor.process(Delivery(item, attempt=2, last=False, stream_seq=1))
    assert wired.events.events == before  # same event ids: nothing new
    assert await wired.balance("dee") == 92


class FailsOnCompleted(InMemoryPublisher):
    """Loses the connection exactly when `batch.completed` is published, while `broken`."""

    broken = True

    async def publish(self, subject: str, message: msgspec.Struct, *, key: str) -> str:
        if self.broken and subject == subjects.BATCH_COMPLETED:
            raise ConnectionError("NATS went away")
        return await super().publish(subject, message, key=key)


async def test_a_completion_lost_to_a_crash_is_announced_on_recovery(
    db_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    events = FailsOnCompleted()
    wired = wire(db_pool, tmp_path, events=events)
    await wired.grant("eli", 100)
    await wired.intake.on_batch(
        batch_body("r-crash", "eli", [await wired.upload("eli", "a.png", png())])
    )
    [item] = wired.queue.items
    with pytest.raises(ConnectionError):
        await wired.processor.process(Delivery(item, attempt=1, last=False, stream_seq=1))
    batch_id = batch_id_for("r-crash")
    async with db_pool.acquire() as conn:
        row = await repo.get_batch(conn, batch_id)
    assert row is not None  # final in the database, but nobody was told
    assert (row.status, row.completion_announced_at) == (repo.BatchState.COMPLETED, None)
    assert events.of(subjects.BATCH_COMPLETED) == []

    events.broken = False  # the item is redelivered: the completion is announced
    await wired.processor.process(Delivery(item, attempt=2, last=False, stream_seq=1))
    [completed] = events.of(subjects.BATCH_COMPLETED)
    assert completed["status"] == "completed"
    async with db_pool.acquire() as conn:
        row = await repo.get_batch(conn, batch_id)
    assert row is not None
    assert row.is_final
    assert row.completion_announced_at is not None


async def test_a_final_but_unannounced_batch_is_announced_once(wired: Wired) -> None:
    await wired.grant("fox", 100)
    await wired.intake.on_batch(
        batch_body("r-announce", "fox", [await wired.upload("fox", "a.png", png())])
    )
    await wired.work_all()
    batch_id = batch_id_for("r-announce")
    async with wired.pool.acquire() as conn:
        await conn.execute(
            "UPDATE batches SET completion_announced_at = NULL WHERE id = $1", batch_id
        )
    wired.events.events.clear()
    await wired.finalizer.finalize(batch_id)
    await wired.finalizer.finalize(batch_id)
    assert len(wired.events.of(subjects.BATCH_COMPLETED)) == 1


class LosesOneImageEnd(InMemoryPublisher):
    """Loses the connection when the first image's end is published, while `broken`;
    records every publish call (JetStream would drop a repeat only inside its window)."""

    broken = True

    def __init__(self, lost_key: str) -> None:
        super().__init__()
        self.lost_key = lost_key
        self.calls: list[tuple[str, str]] = []

    async def publish(self, subject: str, message: msgspec.Struct, *, key: str) -> str:
        self.calls.append((subject, key))
        if self.broken and key == self.lost_key and subject == subjects.ITEM_DONE:
            raise ConnectionError("NATS went away")
        return await super().publish(subject, message, key=key)


async def test_an_image_end_lost_to_an_outage_goes_out_before_batch_completed(
    db_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    from lumiku_bgremover.pipeline.intake import item_id_for  # noqa: PLC0415

    batch_id = batch_id_for("r-lost-end")
    first = item_id_for(batch_id, 0)
    events = LosesOneImageEnd(first)
    wired = wire(db_pool, tmp_path, events=events)
    await wired.grant("gus", 100)
    refs = [await wired.upload("gus", f"p{i}.png", png()) for i in range(3)]
    await wired.intake.on_batch(batch_body("r-lost-end", "gus", refs, then_upscale={"scale": 4}))
    lost, *others = wired.queue.items
    with pytest.raises(ConnectionError):  # done in the database, its event swallowed
        await wired.processor.process(Delivery(lost, attempt=1, last=False, stream_seq=1))
    events.broken = False
    for item in others:  # the other images finish the batch before `lost` comes back
        await wired.processor.process(Delivery(item, attempt=1, last=False, stream_seq=2))

    order = [(e.subject, e.body.get("index")) for e in events.events]
    assert order[-1] == (subjects.BATCH_COMPLETED, None), "batch.completed is the last event"
    assert sorted(i for s, i in order if s == subjects.ITEM_DONE) == [0, 1, 2]
    handed = {e["item_id"]: e["scale"] for e in events.of(subjects.UPSCALER_REQUESTED)}
    assert handed == {item_id_for(batch_id, i): 4 for i in range(3)}
    straggler = next(e for e in events.of(subjects.ITEM_DONE) if e["index"] == 0)
    assert (straggler["filename"], straggler["correlation"]) == (
        "p0.png", {"app": "web", "ref": "r-lost-end"})  # fmt: skip
    async with db_pool.acquire() as conn:
        assert await repo.unannounced_items(conn, batch_id) == []

    calls = len(events.calls)  # `lost` is redelivered long after: nothing is published again
    await wired.processor.process(Delivery(lost, attempt=2, last=False, stream_seq=1))
    assert events.calls[calls:] == []
    assert await wired.balance("gus") == 100 - 24
