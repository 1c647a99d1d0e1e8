"""Events this service publishes (JetStream), each echoing the request's correlation."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from lumiku_bgremover.contracts.codes import FailCode, RejectCode
from lumiku_bgremover.contracts.common import (
    MAX_IMAGES,
    AwareDatetime,
    BatchStatus,
    Correlation,
    Count,
    Credits,
    DownloadUrl,
    Filename,
    Ident,
    ImageIndex,
    Message,
    ObjectRef,
    PricingType,
    RequestMode,
    Text,
    Tier,
    UserId,
)
from lumiku_bgremover.contracts.replies import DecimalText, JsonPath
from lumiku_bgremover.contracts.work import Lane

ImageCount = Annotated[int, msgspec.Meta(ge=1, le=MAX_IMAGES)]
Pixels = Annotated[int, msgspec.Meta(ge=1)]
Slug = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]
ModelName = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$")]
ContentType = Literal["image/png", "image/webp", "image/jpeg"]


def final_status(total: int, succeeded: int, cancelled: int) -> BatchStatus:
    """The final status the counts give: `completed` when every image succeeded,
    `partial` when some did, else `cancelled` if any was cancelled, else `failed`."""
    if succeeded == total:
        return BatchStatus.COMPLETED
    if succeeded:
        return BatchStatus.PARTIAL
    return BatchStatus.CANCELLED if cancelled else BatchStatus.FAILED


def _check_counts(total: int, succeeded: int, failed: int, cancelled: int) -> int:
    done = succeeded + failed + cancelled
    if done > total:
        raise ValueError("succeeded + failed + cancelled exceeds total")
    return done


class BatchAccepted(Message, frozen=True, kw_only=True):
    """A request was accepted and charged (once); its images are queued.

    Also sent for a single image (`mode` single, `count` 1), where `pricing_type`
    says whether credits or the subscription's quota paid for it. `priced_count`
    images were priced and charged (the discount band too): `count` less those
    whose source was missing or too large at intake, which fail at once
    (`bgremove.item.failed`) and are never charged.
    """

    request_id: Ident
    batch_id: Ident
    user_id: UserId
    tier: Tier
    mode: RequestMode
    count: ImageCount
    priced_count: ImageCount
    pricing_type: PricingType
    credits_charged: Credits
    discount_pct: Annotated[int, msgspec.Meta(ge=0, le=100)]
    per_image: DecimalText
    lane: Lane
    correlation: Correlation | None = None
    accepted_at: AwareDatetime

    def __post_init__(self) -> None:
        if self.priced_count > self.count:
            raise ValueError("priced_count exceeds count")


class RequestRejected(Message, frozen=True, kw_only=True):
    """A request was refused before any work or charge.

    `request_id` and `user_id` are null when the body was too broken to read them;
    a refused cancel (which has no request id) names its `batch_id`.
    """

    request_id: Ident | None = None
    user_id: UserId | None = None
    batch_id: Ident | None = None
    code: RejectCode
    message: Text
    path: JsonPath | None = None
    correlation: Correlation | None = None
    rejected_at: AwareDatetime


class ItemDone(Message, frozen=True, kw_only=True):
    """One image finished: where its result is, and a download URL until it expires.

    Store `result` (the object reference), not `url`: presigned URLs expire.
    """

    batch_id: Ident
    item_id: Ident
    user_id: UserId
    index: ImageIndex
    filename: Filename
    result: ObjectRef
    url: DownloadUrl
    url_expires_at: AwareDatetime | None
    content_type: ContentType
    size_bytes: Annotated[int, msgspec.Meta(ge=1)]
    width: Pixels
    height: Pixels
    engine: Slug
    model: ModelName
    processing_ms: Count
    correlation: Correlation | None = None
    #: The requester's id of the image (`ImageInput.source_id`; an avatar id).
    source_id: Ident | None = None
    completed_at: AwareDatetime


class ItemFailed(Message, frozen=True, kw_only=True):
    """One image failed. `credits_refunded` is what was refunded for it now: the
    full price of a single image; 0 for a batch image, whose refund comes with
    `BatchCompleted` at the batch's effective per-image price."""

    batch_id: Ident
    item_id: Ident
    user_id: UserId
    index: ImageIndex
    filename: Filename
    code: FailCode
    message: Text
    credits_refunded: Credits
    correlation: Correlation | None = None
    #: The requester's id of the image (`ImageInput.source_id`; an avatar id).
    source_id: Ident | None = None
    failed_at: AwareDatetime


class BatchProgress(Message, frozen=True, kw_only=True):
    """Throttled progress of a batch (at most every few seconds, and never after
    `BatchCompleted`)."""

    batch_id: Ident
    user_id: UserId
    total: ImageCount
    succeeded: Count
    failed: Count
    cancelled: Count
    correlation: Correlation | None = None
    updated_at: AwareDatetime

    def __post_init__(self) -> None:
        _check_counts(self.total, self.succeeded, self.failed, self.cancelled)


class BatchCompleted(Message, frozen=True, kw_only=True):
    """A batch is final: counts, the ZIP of its results, and the credits settled.

    `credits_charged - credits_refunded` is what the user paid in the end.
    """

    batch_id: Ident
    request_id: Ident
    user_id: UserId
    tier: Tier
    mode: RequestMode
    status: BatchStatus
    total: ImageCount
    succeeded: Count
    failed: Count
    cancelled: Count
    archive: ObjectRef | None = None
    archive_url: DownloadUrl | None = None
    archive_url_expires_at: AwareDatetime | None = None
    credits_charged: Credits
    credits_refunded: Credits
    correlation: Correlation | None = None
    completed_at: AwareDatetime

    def __post_init__(self) -> None:
        if _check_counts(self.total, self.succeeded, self.failed, self.cancelled) != self.total:
            raise ValueError("succeeded + failed + cancelled must equal total")
        if not BatchStatus(self.status).is_final:
            raise ValueError("a completed batch has a final status")
        if self.status is not final_status(self.total, self.succeeded, self.cancelled):
            raise ValueError("status does not follow from the counts")
        if self.credits_refunded > self.credits_charged:
            raise ValueError("credits_refunded exceeds credits_charged")
        if self.archive_url is not None and self.archive is None:
            raise ValueError("archive_url needs archive")


class UpscalerRequested(Message, frozen=True, kw_only=True):
    """Remove-then-upscale: hands one result over to the Upscaler.

    `request_id` is the Upscaler's idempotency key (stable per item).
    """

    request_id: Ident
    user_id: UserId
    batch_id: Ident
    item_id: Ident
    image: ObjectRef
    url: DownloadUrl
    url_expires_at: AwareDatetime | None
    filename: Filename
    content_type: ContentType
    scale: Literal[2, 4]
    tier: Tier
    correlation: Correlation | None = None
    requested_at: AwareDatetime
