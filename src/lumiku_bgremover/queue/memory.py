"""An in-memory work queue for tests of intake: what was enqueued, de-duplicated by item id."""

from __future__ import annotations

from lumiku_bgremover.contracts.work import WorkItem


class InMemoryWorkQueue:
    """Keeps enqueued items in order; the same item id twice is stored once (as JetStream)."""

    def __init__(self, *, fail_with: Exception | None = None) -> None:
        self.items: list[WorkItem] = []
        self.fail_with = fail_with

    async def enqueue(self, item: WorkItem) -> None:
        """Record `item` unless its id is already queued; raise `fail_with` if set."""
        if self.fail_with is not None:
            raise self.fail_with
        if all(queued.item_id != item.item_id for queued in self.items):
            self.items.append(item)

    def ids(self) -> list[str]:
        """The queued item ids, in order."""
        return [item.item_id for item in self.items]
