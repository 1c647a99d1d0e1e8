"""Request-reply contracts (core NATS): quotes and batch status.

Replies are tagged with `status`: `"ok"` for the answer, `"error"` for an
`ErrorReply`, so a client decodes `QuoteReply | ErrorReply` in one step.
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

from lumiku_bgremover.contracts.codes import RejectCode
from lumiku_bgremover.contracts.common import (
    MAX_IMAGES,
    AwareDatetime,
    BatchStatus,
    Correlation,
    Count,
    Credits,
    DownloadUrl,
    Ident,
    Message,
    ObjectRef,
    PricingType,
    RequestMode,
    Text,
    Tier,
    UserId,
)

#: Exact decimal text of credits per image, such as "7.6" (never a float).
DECIMAL_PATTERN: Final = r"^(0|[1-9][0-9]*)(\.[0-9]+)?$"
DecimalText = Annotated[str, msgspec.Meta(pattern=DECIMAL_PATTERN, max_length=32)]
#: A JSON path into a request body, as msgspec reports it (`$.images[3].ref`).
JsonPath = Annotated[str, msgspec.Meta(max_length=512, pattern=r"^\$")]


class QuoteRequest(Message, frozen=True, kw_only=True):
    """Price `count` images of `tier` for a user, before asking for the work."""

    user_id: UserId
    tier: Tier
    count: Annotated[int, msgspec.Meta(ge=1, le=MAX_IMAGES)]
    mode: RequestMode = RequestMode.BATCH


class QuoteReply(Message, tag="ok", tag_field="status", frozen=True, kw_only=True):
    """The price and whether the user can pay it now.

    `total = base_total - discount` credits; with `pricing_type` subscription (a
    single image covered by the plan) all three are 0 and one unit of quota is
    used instead. `per_image` is `total / count` as exact decimal text.
    `quota_used` / `quota_left` are today's subscription usage (null without
    one). `accepted` is false exactly when `reason` says why.
    """

    tier: Tier
    count: Annotated[int, msgspec.Meta(ge=1, le=MAX_IMAGES)]
    mode: RequestMode
    credits_per_image: Credits
    base_total: Credits
    discount_pct: Annotated[int, msgspec.Meta(ge=0, le=100)]
    discount: Credits
    total: Credits
    per_image: DecimalText
    pricing_type: PricingType
    quota_used: Count | None
    quota_left: Count | None
    balance: Credits
    sufficient: bool
    accepted: bool
    reason: RejectCode | None = None

    def __post_init__(self) -> None:
        if self.total != self.base_total - self.discount:
            raise ValueError("total must be base_total - discount")
        if self.accepted == (self.reason is not None):
            raise ValueError("reason is given exactly when not accepted")
        if self.pricing_type == PricingType.SUBSCRIPTION and (
            self.mode == RequestMode.BATCH or self.total != 0
        ):
            raise ValueError("only a single image uses the subscription, for 0 credits")


class ErrorReply(Message, tag="error", tag_field="status", frozen=True, kw_only=True):
    """A request-reply that could not be answered: a `RejectCode`, text and JSON path."""

    code: RejectCode
    message: Text
    path: JsonPath | None = None


class BatchStatusRequest(Message, frozen=True, kw_only=True):
    """Ask for the progress of one batch; only its owner gets an answer."""

    user_id: UserId
    batch_id: Ident


class BatchStatusReply(Message, tag="ok", tag_field="status", frozen=True, kw_only=True):
    """The progress of one batch (or single-image job), as stored."""

    batch_id: Ident
    request_id: Ident
    user_id: UserId
    tier: Tier
    mode: RequestMode
    batch_status: BatchStatus
    total: Annotated[int, msgspec.Meta(ge=1, le=MAX_IMAGES)]
    succeeded: Count
    failed: Count
    cancelled: Count
    credits_charged: Credits
    credits_refunded: Credits
    archive: ObjectRef | None = None
    archive_url: DownloadUrl | None = None
    created_at: AwareDatetime
    updated_at: AwareDatetime
    completed_at: AwareDatetime | None = None
    correlation: Correlation | None = None

    def __post_init__(self) -> None:
        if self.succeeded + self.failed + self.cancelled > self.total:
            raise ValueError("succeeded + failed + cancelled exceeds total")
        if self.credits_refunded > self.credits_charged:
            raise ValueError("credits_refunded exceeds credits_charged")
