"""Typed rows of batches and items: stored states decoded once, and the one mapping
from a stored batch state to the contract's `BatchStatus`."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Final, Literal
from uuid import UUID

import msgspec

from lumiku_bgremover.contracts.codes import FailCode
from lumiku_bgremover.contracts.common import (
    BatchStatus,
    Correlation,
    ImageRef,
    OutputOptions,
    PricingType,
    RequestMode,
    Tier,
)
from lumiku_bgremover.contracts.work import Lane


class BatchState(enum.StrEnum):
    """A batch's stored state (the `batches.status` CHECK lists exactly these)."""

    ACCEPTED = "accepted"  #: charged, no item started yet
    PROCESSING = "processing"  #: an item was claimed
    FINALIZING = "finalizing"  #: every item ended; archive, refunds and event under way
    COMPLETED = "completed"
    PARTIAL = "partial"
    CANCELLED = "cancelled"
    FAILED = "failed"


class ItemState(enum.StrEnum):
    """An item's stored state (the `batch_items.status` CHECK lists exactly these)."""

    PENDING = "pending"
    PROCESSING = "processing"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: Stored batch state -> the state the contract shows (`BatchStatus`); covers every state.
CONTRACT_STATUS: Final[Mapping[BatchState, BatchStatus]] = MappingProxyType(
    {
        BatchState.ACCEPTED: BatchStatus.PENDING,
        BatchState.PROCESSING: BatchStatus.PROCESSING,
        BatchState.FINALIZING: BatchStatus.PROCESSING,
        BatchState.COMPLETED: BatchStatus.COMPLETED,
        BatchState.PARTIAL: BatchStatus.PARTIAL,
        BatchState.CANCELLED: BatchStatus.CANCELLED,
        BatchState.FAILED: BatchStatus.FAILED,
    }
)
#: Final batch states, and the contract status each stores.
FINAL_STATES: Final = frozenset(
    {BatchState.COMPLETED, BatchState.PARTIAL, BatchState.CANCELLED, BatchState.FAILED}
)
#: Item states that are final.
FINAL_ITEM_STATES: Final = frozenset({ItemState.DONE, ItemState.FAILED, ItemState.CANCELLED})
#: The count of the contract (`BatchProgress`, `BatchStatusReply`, `BatchCompleted`) an item
#: in each stored state is shown in; None: not ended yet, only in `total`. Covers every state.
#: `done` items are also announced by `item.done`, `failed` and `cancelled` ones by
#: `item.failed` (a cancelled one with the code `cancelled`).
ItemCount = Literal["succeeded", "failed", "cancelled"]
ITEM_COUNTED_AS: Final[Mapping[ItemState, ItemCount | None]] = MappingProxyType(
    {
        ItemState.PENDING: None,
        ItemState.PROCESSING: None,
        ItemState.DONE: "succeeded",
        ItemState.FAILED: "failed",
        ItemState.CANCELLED: "cancelled",
    }
)


def contract_status(state: BatchState) -> BatchStatus:
    """The contract's status of a stored batch state (finalizing still reads processing)."""
    return CONTRACT_STATUS[state]


def stored_state(status: BatchStatus) -> BatchState:
    """The stored state of a final contract status (what `complete` writes)."""
    if not status.is_final:
        raise ValueError(f"{status} is not a final status")
    return BatchState(status.value)


@dataclass(frozen=True, slots=True)
class NewBatch:
    """A batch as intake creates it (already priced)."""

    id: str
    request_id: str
    user_id: str
    tier: Tier
    mode: RequestMode
    lane: Lane
    pricing_type: PricingType
    total_items: int
    credits_per_image: int
    base_total: int
    discount_pct: int
    discount: int
    credits_charged: int
    options: OutputOptions
    correlation: Correlation | None
    subscription_id: UUID | None = None
    quota_key: str | None = None
    #: Images refused at intake (missing or too large source): failed, never charged.
    failed_at_intake: int = 0
    then_upscale_scale: int | None = None


@dataclass(frozen=True, slots=True)
class NewItem:
    """One image of a new batch."""

    id: str
    idx: int
    filename: str
    source: ImageRef
    declared_size: int | None
    #: Set for an image that failed at intake: it is stored failed with this code.
    failure: tuple[FailCode, str] | None = None
    source_id: str | None = None


@dataclass(frozen=True, slots=True)
class Batch:
    """A batch row."""

    id: str
    request_id: str
    user_id: str
    tier: Tier
    mode: RequestMode
    lane: Lane
    status: BatchState
    pricing_type: PricingType
    total_items: int
    succeeded: int
    failed: int
    cancelled: int
    failed_at_intake: int
    credits_per_image: int
    base_total: int
    discount_pct: int
    discount: int
    credits_charged: int
    credits_refunded: int
    options: OutputOptions
    correlation: Correlation | None
    subscription_id: UUID | None
    quota_key: str | None
    archive_bucket: str | None
    archive_key: str | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    completion_announced_at: datetime | None
    #: The remove-then-upscale step's factor (`then_upscale`), when the request had one.
    then_upscale_scale: int | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Batch:
        """Decode a `batches` row: every enum and JSON column once, here."""
        values = dict(row)
        correlation = values["correlation"]
        return cls(
            **{
                **values,
                "tier": Tier(values["tier"]),
                "mode": RequestMode(values["mode"]),
                "lane": Lane(values["lane"]),
                "status": BatchState(values["status"]),
                "pricing_type": PricingType(values["pricing_type"]),
                "options": msgspec.convert(values["options"], OutputOptions),
                "correlation": None
                if correlation is None
                else msgspec.convert(correlation, Correlation),
            }
        )

    @property
    def contract_status(self) -> BatchStatus:
        """The status the contract shows for this batch."""
        return contract_status(self.status)

    @property
    def is_final(self) -> bool:
        """The batch reached a final state (its row says so)."""
        return self.status in FINAL_STATES

    @property
    def priced_items(self) -> int:
        """Images the charge covers: all but those that failed at intake."""
        return self.total_items - self.failed_at_intake

    @property
    def ended(self) -> int:
        """Items in a final state."""
        return self.succeeded + self.failed + self.cancelled

    @property
    def all_ended(self) -> bool:
        """Every item is done, failed or cancelled."""
        return self.ended == self.total_items


@dataclass(frozen=True, slots=True)
class Item:
    """A batch item row."""

    id: str
    batch_id: str
    idx: int
    filename: str
    source: ImageRef
    declared_size: int | None
    status: ItemState
    attempts: int
    result_bucket: str | None
    result_key: str | None
    result_size: int | None
    width: int | None
    height: int | None
    content_type: str | None
    engine: str | None
    model: str | None
    processing_ms: int | None
    cost_idr: Decimal | None
    error_code: FailCode | None
    error_message: str | None
    finished_at: datetime | None
    #: The requester's id of the image (an avatar id), echoed on its events.
    source_id: str | None = None
    #: When its `item.done` / `item.failed` went out (None: not yet, or cancelled).
    announced_at: datetime | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Item:
        """Decode a `batch_items` row: state, error code and source once, here."""
        values = dict(row)
        code = values["error_code"]
        return cls(
            **{
                **values,
                "source": msgspec.convert(values["source"], ImageRef),
                "status": ItemState(values["status"]),
                "error_code": None if code is None else FailCode(code),
            }
        )


@dataclass(frozen=True, slots=True)
class ItemResult:
    """What a processed item stores."""

    bucket: str
    key: str
    size: int
    width: int
    height: int
    content_type: str
    engine: str
    model: str
    processing_ms: int
    cost_idr: Decimal | None
    provider: str | None = None  #: who ran the model (the engine, or its provider)
    engine_ms: int | None = None  #: the engine call, retries and fallback included
    engine_attempts: int | None = None
    engine_fallback: bool | None = None
