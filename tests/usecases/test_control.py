"""Cancels on the in-memory bus: every cancel gets an answer, and only the owner's counts."""

import msgspec
import pytest

from lumiku_bgremover.contracts import BatchStatusRequest, subjects
from lumiku_bgremover.contracts.common import BatchStatus
from lumiku_bgremover.db import batches as repo
from lumiku_bgremover.pipeline import control
from lumiku_bgremover.pipeline.intake import batch_id_for
from lumiku_bgremover.queue import Delivery
from tests.usecases.conftest import Wired, png
from tests.usecases.test_intake import batch_body

pytestmark = pytest.mark.integration


async def cancel(
    wired: Wired, body: dict[str, object] | bytes, message_key: str | None = None
) -> None:
    data = body if isinstance(body, bytes) else msgspec.json.encode(body)
    await control.on_cancel(
        wired.pool, wired.finalizer, wired.announcer, data, message_key=message_key
    )


async def started(wired: Wired, user: str, request_id: str, count: int) -> str:
    await wired.grant(user, 1000)
    refs = [await wired.upload(user, f"p{i}.png", png()) for i in range(count)]
    await wired.intake.on_batch(batch_body(request_id, user, refs))
    return batch_id_for(request_id)


async def test_a_cancel_that_takes_effect_is_answered_by_progress_then_completion(
    wired: Wired,
) -> None:
    batch_id = await started(wired, "ann", "r-cancel", 4)
    first = wired.queue.items.pop(0)
    async with wired.pool.acquire() as conn:
        await repo.claim_item(conn, first.item_id)  # one image is being processed
    await cancel(wired, {"batch_id": batch_id, "user_id": "ann"})
    [progress] = wired.events.of(subjects.BATCH_PROGRESS)
    assert progress["cancelled"] == 3
    assert wired.events.of(subjects.REQUEST_REJECTED) == []
    stopped = wired.events.of(subjects.ITEM_FAILED)
    assert [(e["index"], e["code"], e["credits_refunded"]) for e in stopped] == [
        (1, "cancelled", 0), (2, "cancelled", 0), (3, "cancelled", 0)]  # fmt: skip
    assert [e.subject for e in wired.events.events][-4:] == [subjects.ITEM_FAILED] * 3 + [
        subjects.BATCH_PROGRESS]  # each stopped image's end, then the new counts  # fmt: skip
    for item in wired.queue.items:  # the cancelled images' work comes back: nothing more
        await wired.processor.process(Delivery(item, attempt=1, last=False, stream_seq=2))
    assert len(wired.events.of(subjects.ITEM_FAILED)) == 3
    await wired.processor.process(Delivery(first, attempt=1, last=False, stream_seq=1))
    [done] = wired.events.of(subjects.ITEM_DONE)
    assert done["index"] == 0
    [completed] = wired.events.of(subjects.BATCH_COMPLETED)
    assert wired.events.events[-1].subject == subjects.BATCH_COMPLETED
    assert (completed["status"], completed["succeeded"], completed["cancelled"]) == (
        "partial", 1, 3)  # fmt: skip
    assert completed["credits_refunded"] == 24
    assert await wired.balance("ann") == 1000 - 8


async def test_refused_cancels_are_answered_with_a_code(wired: Wired) -> None:
    batch_id = await started(wired, "bob", "r-refused", 2)
    await cancel(wired, {"batch_id": batch_id, "user_id": "mallory"})
    await cancel(wired, {"batch_id": "b_nonexistent", "user_id": "bob"})
    for item in wired.queue.items:
        async with wired.pool.acquire() as conn:
            await repo.claim_item(conn, item.item_id)
    await cancel(wired, {"batch_id": batch_id, "user_id": "bob"})  # all started
    await wired.work_all()
    await cancel(wired, {"batch_id": batch_id, "user_id": "bob"})  # all ended
    await cancel(wired, b'{"batch_id": 7}')
    answers = [(e["code"], e["batch_id"], e["user_id"])
               for e in wired.events.of(subjects.REQUEST_REJECTED)]  # fmt: skip
    assert answers == [
        ("not_found", batch_id, "mallory"),
        ("not_found", "b_nonexistent", "bob"),
        ("nothing_to_cancel", batch_id, "bob"),
        ("batch_finished", batch_id, "bob"),
        ("invalid_request", None, None),
    ]
    mallory = wired.events.of(subjects.REQUEST_REJECTED)[0]
    assert mallory["message"] == wired.events.of(subjects.REQUEST_REJECTED)[1]["message"].replace(
        "b_nonexistent", batch_id
    )  # a foreign batch reads exactly like a missing one
    assert await wired.balance("bob") == 1000 - 16


async def test_a_cancel_sent_again_is_answered_again_but_a_redelivery_is_not(wired: Wired) -> None:
    batch_id = await started(wired, "cid", "r-twice", 1)
    await wired.work_all()
    body = {"batch_id": batch_id, "user_id": "cid"}
    await cancel(wired, body, message_key="41")
    await cancel(wired, body, message_key="41")  # the same stored message, delivered again
    await cancel(wired, body, message_key="42")  # the user pressed cancel again
    await cancel(wired, b"{}", message_key="43")
    await cancel(wired, b"{}", message_key="44")
    codes = [e["code"] for e in wired.events.of(subjects.REQUEST_REJECTED)]
    assert codes == ["batch_finished", "batch_finished", "invalid_request", "invalid_request"]


async def test_a_batch_that_is_finalizing_reads_as_processing(wired: Wired) -> None:
    batch_id = await started(wired, "dan", "r-finalizing", 1)
    async with wired.pool.acquire() as conn:  # every image ended, the row is not final yet
        await conn.execute("UPDATE batches SET status = 'finalizing' WHERE id = $1", batch_id)
    request = BatchStatusRequest(user_id="dan", batch_id=batch_id)
    reply = await control.batch_status(wired.pool, wired.finalizer, request)
    assert (reply.batch_status, reply.completed_at) == (BatchStatus.PROCESSING, None)
