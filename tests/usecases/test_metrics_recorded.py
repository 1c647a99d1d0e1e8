"""What the pipeline records (through the in-memory metrics double): images by tier, engine
and outcome, engine calls, credits charged and refunded, batch durations; once each."""

from datetime import UTC, datetime, timedelta

import pytest

from lumiku_bgremover.db import batches as repo
from lumiku_bgremover.observability.recorder import batch_seconds
from lumiku_bgremover.queue import Delivery
from tests.usecases.conftest import Wired, png
from tests.usecases.test_control import cancel, started
from tests.usecases.test_intake import batch_body

pytestmark = pytest.mark.integration

T0 = datetime(2025, 1, 31, 8, 15, tzinfo=UTC)


@pytest.mark.parametrize(
    ("created", "completed", "expected"),
    [
        (T0, None, None),
        (T0, T0, 0.0),
        (T0, T0 + timedelta(minutes=2, milliseconds=500), 120.5),
        (T0, T0 - timedelta(seconds=1), 0.0),  # clock skew between database nodes
    ],
)
def test_batch_seconds(
    created: datetime, completed: datetime | None, expected: float | None
) -> None:
    assert batch_seconds(created, completed) == expected


async def test_a_mixed_batch_records_each_outcome_once(wired: Wired) -> None:
    await wired.grant("ann", 100)
    refs = [await wired.upload("ann", f"p{i}.png", png()) for i in range(3)]
    refs.append({"bucket": "lumiku-bgremover", "key": "originals/ann/missing.png"})
    refs.append(await wired.upload("ann", "junk.png", b"not an image at all"))
    body = batch_body("r-metrics", "ann", refs)
    await wired.intake.on_batch(body)
    await wired.intake.on_batch(body)  # a redelivery charges and counts nothing again
    await wired.work_all()

    metrics = wired.metrics
    assert metrics.charges == [("standard", 32)]
    assert sorted(metrics.items) == [
        ("standard", "fake", "done", ""),
        ("standard", "fake", "done", ""),
        ("standard", "fake", "done", ""),
        ("standard", "none", "failed", "decode_failed"),
        ("standard", "none", "failed", "source_not_found"),
    ]
    assert [(engine, model) for engine, model, _ in metrics.engine_calls] == [
        ("fake", "fake-matte")] * 3  # fmt: skip
    assert all(seconds >= 0 for _, _, seconds in metrics.engine_calls)
    assert metrics.refunds == [("standard", 8)]
    [(tier, seconds)] = metrics.batches
    assert tier == "standard"
    assert seconds >= 0


async def test_a_cancel_records_cancelled_images_and_their_refund(wired: Wired) -> None:
    batch_id = await started(wired, "bea", "r-metrics-cancel", 4)
    first = wired.queue.items.pop(0)
    async with wired.pool.acquire() as conn:
        await repo.claim_item(conn, first.item_id)  # one image is being processed
    await cancel(wired, {"batch_id": batch_id, "user_id": "bea"})
    await wired.processor.process(Delivery(first, attempt=1, last=False, stream_seq=1))

    metrics = wired.metrics
    assert metrics.charges == [("standard", 32)]
    assert sorted(metrics.items) == [
        ("standard", "fake", "done", ""),
        *[("standard", "none", "cancelled", "")] * 3,
    ]
    assert metrics.refunds == [("standard", 24)]
    assert len(metrics.batches) == 1


async def test_a_batch_that_cannot_be_paid_records_nothing(wired: Wired) -> None:
    refs = [await wired.upload("poor", "p.png", png())]
    await wired.intake.on_batch(batch_body("r-metrics-poor", "poor", refs))
    assert wired.metrics.charges == []
    assert wired.metrics.items == []
