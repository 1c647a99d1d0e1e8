"""What the work queue carries and drives: deliveries, processors, and the queue itself."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from lumiku_bgremover.contracts.codes import FailCode
from lumiku_bgremover.contracts.work import WorkItem


@dataclass(frozen=True, slots=True)
class Delivery:
    """One delivery of a work item."""

    item: WorkItem
    attempt: int  #: 1 on the first delivery
    last: bool  #: no redelivery follows this one
    stream_seq: int
    #: The message's headers (the enqueuing span's `traceparent` among them).
    headers: Mapping[str, str] = field(default_factory=dict)


class Processor(Protocol):
    """What the queue drives: processing an item, and giving one up."""

    async def process(self, delivery: Delivery) -> None:
        """Make the item's outcome durable; raise to have it retried."""

    async def give_up(self, item: WorkItem, *, code: FailCode, message: str) -> None:
        """Record the item as failed (idempotent); called once retries are exhausted."""


class WorkQueue(Protocol):
    """Where intake puts work items; enqueuing the same item id twice stores it once."""

    async def enqueue(self, item: WorkItem) -> None:
        """Store `item` durably (or raise)."""
