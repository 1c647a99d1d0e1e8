"""End states of batches that do not all succeed, and of many batches at once.

`assert_all_done` (stack.py) is the end state of one fully successful batch; these
are its variants: one batch with some items failed (`assert_outcome`), and every
batch of many users (`assert_users_settled`). "Ended" always means the
`batch.completed` event was published (`completion_announced_at`), not only that the
row is final: item events may lag the final row after a crash.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from lumiku_bgremover.contracts import subjects
from lumiku_bgremover.db import connect
from tests.fixtures.events import stored_events
from tests.integration.pipeline_harness import Client
from tests.reliability.stack import Stack, objects_under


async def item_rows(database_url: str) -> list[dict[str, Any]]:
    """Every item row (one batch's, in tests with one batch), by index."""
    async with connect(database_url) as conn:
        rows = await conn.fetch(
            "SELECT idx, status, engine, engine_fallback, error_code FROM batch_items ORDER BY idx"
        )
    return [dict(row) for row in rows]


@dataclass(frozen=True)
class Outcome:
    """What one batch must end as: the failed indexes with their codes, the credits."""

    count: int
    failed: dict[int, str] = field(default_factory=dict)
    price: int = 0  #: credits charged at intake
    per_image: int = 0  #: the refund of one failed image
    grants: int = 1000

    @property
    def done(self) -> list[int]:
        return [i for i in range(self.count) if i not in self.failed]

    @property
    def refund(self) -> int:
        return self.per_image * len(self.failed)

    @property
    def status(self) -> str:
        if not self.failed:
            return "completed"
        return "partial" if self.done else "failed"


async def assert_outcome(stack: Stack, client: Client, user: str, want: Outcome) -> None:
    """The exact end state of one batch: rows, events (each once), ledger, objects."""
    rows = await item_rows(stack.database_url)
    assert {r["idx"]: r["status"] for r in rows} == {
        i: "failed" if i in want.failed else "done" for i in range(want.count)
    }
    assert {r["idx"]: r["error_code"] for r in rows if r["status"] == "failed"} == want.failed
    async with connect(stack.database_url) as conn:
        batch = await conn.fetchrow("SELECT id, status, succeeded, failed FROM batches")
    assert batch is not None
    assert (batch["status"], batch["succeeded"], batch["failed"]) == (
        want.status, len(want.done), len(want.failed)
    )  # fmt: skip
    await _assert_events_once(stack, want)
    ledger = await client.ledger(user)
    assert await client.balance(user) == sum(e.amount for e in ledger)
    assert await client.balance(user) == want.grants - want.price + want.refund
    assert len(objects_under(stack.s3, f"results/{user}/{batch['id']}/")) == len(want.done)
    assert objects_under(stack.s3, f"archives/{user}/") == (
        [f"archives/{user}/{batch['id']}.zip"] if want.done else []
    )


async def _assert_events_once(stack: Stack, want: Outcome) -> None:
    done = Counter(e["index"] for e in await stored_events(stack.settings, subjects.ITEM_DONE))
    assert done == Counter(want.done), "each done item announced once"
    failed = await stored_events(stack.settings, subjects.ITEM_FAILED)
    assert sorted((e["index"], e["code"]) for e in failed) == sorted(want.failed.items())
    assert all(e["credits_refunded"] == 0 for e in failed), "a batch refunds at its end"
    completed = await stored_events(stack.settings, subjects.BATCH_COMPLETED)
    assert [(c["credits_charged"], c["credits_refunded"]) for c in completed] == [
        (want.price, want.refund)
    ]
