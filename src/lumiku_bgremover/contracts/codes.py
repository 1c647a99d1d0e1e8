"""Machine-readable codes: why a request was refused, why an image failed."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from lumiku_bgremover.contracts.common import INPUT_FORMATS_TEXT


class RejectCode(enum.StrEnum):
    """Why a request was refused (nothing was charged), or why a request-reply failed."""

    INVALID_REQUEST = "invalid_request"
    UNKNOWN_TIER = "unknown_tier"
    TOO_MANY_IMAGES = "too_many_images"
    IMAGE_TOO_LARGE = "image_too_large"
    BATCH_TOO_LARGE = "batch_too_large"
    INSUFFICIENT_CREDITS = "insufficient_credits"
    FORBIDDEN_SOURCE = "forbidden_source"
    TIER_NOT_ALLOWED = "tier_not_allowed"
    NOT_FOUND = "not_found"
    BATCH_FINISHED = "batch_finished"
    NOTHING_TO_CANCEL = "nothing_to_cancel"
    NO_RUNNABLE_IMAGES = "no_runnable_images"
    RATE_LIMITED = "rate_limited"
    INTERNAL_ERROR = "internal_error"


class FailCode(enum.StrEnum):
    """Why one image failed (its credits are refunded)."""

    SOURCE_NOT_FOUND = "source_not_found"
    SOURCE_TOO_LARGE = "source_too_large"
    FETCH_FAILED = "fetch_failed"
    FORBIDDEN_SOURCE = "forbidden_source"
    UNSUPPORTED_FORMAT = "unsupported_format"
    DECODE_FAILED = "decode_failed"
    TOO_MANY_PIXELS = "too_many_pixels"
    ENGINE_FAILED = "engine_failed"
    ENGINE_UNAVAILABLE = "engine_unavailable"
    CANCELLED = "cancelled"
    MAX_DELIVERIES = "max_deliveries"
    INTERNAL_ERROR = "internal_error"


#: What each `RejectCode` means (documented in contracts/README.md).
REJECT_CODE_HELP: Final[Mapping[RejectCode, str]] = MappingProxyType(
    {
        RejectCode.INVALID_REQUEST: "malformed JSON, or a field breaks its contract (see `path`)",
        RejectCode.UNKNOWN_TIER: "`tier` names no tier",
        RejectCode.TOO_MANY_IMAGES: "more images than one request may hold",
        RejectCode.IMAGE_TOO_LARGE: "a declared `size_bytes` is over the per-image limit",
        RejectCode.BATCH_TOO_LARGE: "the declared sizes add up to more than the batch limit",
        RejectCode.INSUFFICIENT_CREDITS: "the balance does not cover the total",
        RejectCode.FORBIDDEN_SOURCE: "an image ref outside the user's prefix or allow-list",
        RejectCode.TIER_NOT_ALLOWED: "the tier is not enabled for this user or source",
        RejectCode.NOT_FOUND: "no such batch for this user (never says whose it is)",
        RejectCode.BATCH_FINISHED: "a cancel arrived after every image of the batch had ended",
        RejectCode.NOTHING_TO_CANCEL: "a cancel found no image waiting: all had started or ended",
        RejectCode.NO_RUNNABLE_IMAGES: (
            "no image of the request can run: every source is missing or too large "
            "(`message` says which)"
        ),
        RejectCode.RATE_LIMITED: "the user's backlog is full; retry later",
        RejectCode.INTERNAL_ERROR: "our fault; nothing was charged",
    }
)

#: What each `FailCode` means (documented in contracts/README.md).
FAIL_CODE_HELP: Final[Mapping[FailCode, str]] = MappingProxyType(
    {
        FailCode.SOURCE_NOT_FOUND: (
            "the object or URL does not exist (found at intake: the image is not charged)"
        ),
        FailCode.SOURCE_TOO_LARGE: (
            "the image's bytes are over the per-image limit (found at intake: not charged)"
        ),
        FailCode.FETCH_FAILED: "the source could not be read (network, timeout)",
        FailCode.FORBIDDEN_SOURCE: "the URL failed the SSRF guard, or the bucket is not allowed",
        FailCode.UNSUPPORTED_FORMAT: f"not a {INPUT_FORMATS_TEXT} image",
        FailCode.DECODE_FAILED: "the bytes are not a readable image",
        FailCode.TOO_MANY_PIXELS: "width x height is over the pixel limit",
        FailCode.ENGINE_FAILED: "the engine answered with an error for this image",
        FailCode.ENGINE_UNAVAILABLE: "no engine could take it (outage, open circuit breaker)",
        FailCode.CANCELLED: "the batch was cancelled before this image ran",
        FailCode.MAX_DELIVERIES: "the work item ran out of delivery attempts",
        FailCode.INTERNAL_ERROR: "our fault",
    }
)
