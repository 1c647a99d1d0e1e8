import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from lumiku_bgremover.pipeline import repository as repo
from lumiku_bgremover.pipeline.completion import Finalizer, final_status, refund_owed

T0 = datetime(2025, 1, 31, 8, 0, tzinfo=UTC)


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Any, str]] = []

    async def publish(self, subject: str, message: msgspec.Struct, *, key: str) -> str:
        self.sent.append((subject, message, key))
        return key


def batch(**changes: Any) -> repo.Batch:
    base = repo.Batch(
        id="b1", request_id="r1", user_id="u1", tier="standard", mode="batch", lane="bulk",
        status="processing", pricing_type="credits", total_items=20, succeeded=0, failed=0,
        cancelled=0, credits_per_image=8, base_total=160, discount_pct=5, discount=8,
        credits_charged=152, credits_refunded=0, options={}, correlation=None,
        subscription_id=None, quota_key=None, archive_bucket=None, archive_key=None,
        created_at=T0, updated_at=T0, completed_at=None,
    )  # fmt: skip
    return dataclasses.replace(base, **changes)


async def test_progress_is_throttled_to_one_a_second_but_the_end_always_shows() -> None:
    now = [T0]
    events = Recorder()
    finalizer = Finalizer(
        None,
        None,
        events,
        clock=lambda: now[0],
        presign_ttl_s=60,
        max_entry_bytes=1,  # type: ignore[arg-type]
    )
    await finalizer.progress(batch(succeeded=1))
    now[0] += timedelta(milliseconds=400)
    await finalizer.progress(batch(succeeded=2))  # too soon: dropped
    now[0] += timedelta(milliseconds=700)
    await finalizer.progress(batch(succeeded=3))
    await finalizer.progress(batch(succeeded=19, failed=1))  # the end is always sent
    assert [m.succeeded for _, m, _ in events.sent] == [1, 3, 19]
    assert [k for _, _, k in events.sent] == ["b1:1", "b1:3", "b1:20"]


def test_final_status() -> None:
    assert final_status(batch(succeeded=1, failed=19)) == "completed"
    assert final_status(batch(cancelled=5, failed=15)) == "cancelled"
    assert final_status(batch(failed=20)) == "failed"


def test_refund_owed_counts_what_was_refunded_already() -> None:
    # 17 successes at 5 % off cost 136 - 6 = 130: 22 of the 152 are owed back
    assert refund_owed(batch(succeeded=17, failed=3)) == 22
    assert refund_owed(batch(succeeded=17, failed=3, credits_refunded=10)) == 12
    assert refund_owed(batch(failed=20)) == 152
    assert refund_owed(batch(succeeded=20)) == 0
