"""Completion's decisions on typed rows and an in-memory publisher: final status, refunds,
progress throttling, and the one mapping from stored state to contract state."""

import dataclasses
from datetime import timedelta

import pytest

from lumiku_bgremover.contracts import subjects
from lumiku_bgremover.contracts.common import BatchStatus
from lumiku_bgremover.db import batches as repo
from lumiku_bgremover.observability.recorder import InMemoryMetrics
from lumiku_bgremover.pipeline.completion import Finalizer, final_status, refund_owed
from lumiku_bgremover.pipeline.events import InMemoryPublisher
from tests.unit.rows import T0, batch


def finalizer(events: InMemoryPublisher, now: list) -> Finalizer:
    return Finalizer(
        None,
        None,
        events,
        clock=lambda: now[0],
        presign_ttl_s=60,
        max_entry_bytes=1,  # type: ignore[arg-type]
        metrics=InMemoryMetrics(),
    )


async def test_progress_is_throttled_to_one_a_second_but_the_end_always_shows() -> None:
    now = [T0]
    events = InMemoryPublisher()
    finals = finalizer(events, now)
    await finals.progress(batch(succeeded=1))
    now[0] += timedelta(milliseconds=400)
    await finals.progress(batch(succeeded=2))  # too soon: dropped
    now[0] += timedelta(milliseconds=700)
    await finals.progress(batch(succeeded=3))
    await finals.progress(batch(succeeded=19, failed=1))  # the end is always sent
    assert [e["succeeded"] for e in events.of(subjects.BATCH_PROGRESS)] == [1, 3, 19]


async def test_a_forced_progress_skips_the_throttle() -> None:
    now = [T0]
    events = InMemoryPublisher()
    finals = finalizer(events, now)
    await finals.progress(batch(succeeded=1))
    await finals.progress(batch(succeeded=1, cancelled=10), force=True)  # a cancel's answer
    assert [e["cancelled"] for e in events.of(subjects.BATCH_PROGRESS)] == [0, 10]


@pytest.mark.parametrize(
    ("counts", "status"),
    [
        ({"succeeded": 20}, BatchStatus.COMPLETED),
        ({"succeeded": 19, "failed": 1}, BatchStatus.PARTIAL),
        ({"succeeded": 1, "cancelled": 19}, BatchStatus.PARTIAL),
        ({"succeeded": 2, "failed": 3, "cancelled": 15}, BatchStatus.PARTIAL),
        ({"cancelled": 5, "failed": 15}, BatchStatus.CANCELLED),
        ({"cancelled": 20}, BatchStatus.CANCELLED),
        ({"failed": 20}, BatchStatus.FAILED),
    ],
)
def test_final_status(counts: dict[str, int], status: BatchStatus) -> None:
    assert final_status(batch(**counts)) is status


def test_refund_owed_counts_what_was_refunded_already() -> None:
    # 17 successes at 5 % off cost 136 - 6 = 130: 22 of the 152 are owed back
    assert refund_owed(batch(succeeded=17, failed=3)) == 22
    assert refund_owed(batch(succeeded=17, failed=3, credits_refunded=10)) == 12
    assert refund_owed(batch(failed=20)) == 152
    assert refund_owed(batch(succeeded=20)) == 0


def test_images_failed_at_intake_were_never_charged_so_owe_nothing() -> None:
    # 25 images, 2 refused at intake: 23 priced at 5 % off = 184 - 9 = 175
    priced = batch(total_items=25, failed_at_intake=2, base_total=184, discount=9,
                   credits_charged=175)  # fmt: skip
    assert refund_owed(dataclasses.replace(priced, succeeded=23, failed=2)) == 0
    # one more fails in processing: 22 successes cost 176 - 8 = 168, 7 come back
    assert refund_owed(dataclasses.replace(priced, succeeded=22, failed=3)) == 7
    assert refund_owed(dataclasses.replace(priced, failed=25)) == 175


def test_every_stored_state_maps_to_a_contract_status() -> None:
    assert set(repo.CONTRACT_STATUS) == set(repo.BatchState)
    finals = {s for s in repo.BatchState if repo.contract_status(s).is_final}
    assert finals == repo.FINAL_STATES
    assert repo.contract_status(repo.BatchState.FINALIZING) is BatchStatus.PROCESSING
    assert repo.contract_status(repo.BatchState.ACCEPTED) is BatchStatus.PENDING
    for status in BatchStatus:
        if status.is_final:
            assert repo.contract_status(repo.stored_state(status)) is status
        else:
            with pytest.raises(ValueError, match="not a final status"):
                repo.stored_state(status)
