"""Types shared by many messages: tiers, plans, correlation, image references."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated, Final

import msgspec


class Tier(enum.StrEnum):
    """Quality tier of a removal; decides credits, engine and model."""

    BASIC = "basic"
    STANDARD = "standard"
    PROFESSIONAL = "professional"
    INDUSTRY = "industry"


class Plan(enum.StrEnum):
    """Subscription plan."""

    STARTER = "starter"
    PRO = "pro"


class App(enum.StrEnum):
    """A Lumiku app whose events start removals (the integration settings are per app)."""

    AVATAR_CREATOR = "avatar-creator"
    POSE_GENERATOR = "pose-generator"
    UPSCALER = "upscaler"


class RequestMode(enum.StrEnum):
    """A batch (always paid in credits, up front) or a single image (quota first)."""

    BATCH = "batch"
    SINGLE = "single"


class PricingType(enum.StrEnum):
    """How work is paid: credits, or one unit of a subscription's daily quota."""

    CREDITS = "credits"
    SUBSCRIPTION = "subscription"


class BatchStatus(enum.StrEnum):
    """Lifecycle of a batch (or a single-image job); the last four are final."""

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"  #: every image succeeded
    PARTIAL = "partial"  #: some succeeded, some failed or were cancelled
    FAILED = "failed"  #: none succeeded
    CANCELLED = "cancelled"  #: cancelled before any image succeeded

    @property
    def is_final(self) -> bool:
        """True for the states a batch never leaves."""
        return self not in {BatchStatus.PENDING, BatchStatus.PROCESSING}


class OutputFormat(enum.StrEnum):
    """Encoding of a result image."""

    PNG = "png"
    WEBP = "webp"
    JPEG = "jpeg"


#: `user_id`: a letter or digit, then letters, digits, `_` or `-`; 1..64 chars. Safe as
#: one NATS subject token and as one object-key segment (no `.`, `*`, `>`, `/`).
USER_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
#: `request_id`, `batch_id`, `item_id`, `event_id`: like a user id, plus `.` and `:`,
#: 1..128 chars. Safe in object keys and headers; NOT a single subject token (`.`).
IDENT_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
#: An app slug (`avatar`, `pose`, `web`): lower-case letter, then `a-z0-9-`; 1..32 chars.
APP_PATTERN: Final = r"^[a-z][a-z0-9-]{0,31}$"
#: A file name: 1..255 chars, no `/` or `\`, no control characters, not `.` or `..`.
FILENAME_PATTERN: Final = r"^(?!\.{1,2}$)[^/\\\x00-\x1f\x7f-\x9f]{1,255}$"
#: An S3 bucket name: 3..63 of `a-z 0-9 . -`, starting and ending alphanumeric, no `..`.
BUCKET_PATTERN: Final = r"^(?!.*\.\.)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
#: An object key: 1..1024 chars, no leading `/`, no `\`, no control characters and no
#: empty, `.` or `..` segments (the storage layer also checks 1024 UTF-8 bytes).
OBJECT_KEY_PATTERN: Final = (
    r"^(?!/)(?!.*//)(?!.*/$)(?!(?:.*/)?\.{1,2}(?:/|$))[^\\\x00-\x1f\x7f]{1,1024}$"
)
#: An image source URL: https only, no whitespace or control characters.
HTTPS_URL_PATTERN: Final = r"^https://[^\s\x00-\x1f\x7f]+$"
#: A download URL we hand out: presigned https/http (MinIO in development) or
#: `file://` (the local store of the embedded mode).
DOWNLOAD_URL_PATTERN: Final = r"^(https?|file)://[^\s\x00-\x1f\x7f]+$"
#: An e-mail address (a plain `local@domain` check; delivery proves the rest).
EMAIL_PATTERN: Final = r"^[^@\s\x00-\x1f\x7f]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}$"
#: A colour `#RRGGBB`.
COLOUR_PATTERN: Final = r"^#[0-9A-Fa-f]{6}$"
#: Plain one-line text without control characters.
_LINE_PATTERN: Final = r"^[^\x00-\x1f\x7f]*$"

UserId = Annotated[str, msgspec.Meta(pattern=USER_ID_PATTERN, description="user id (1..64)")]
Ident = Annotated[str, msgspec.Meta(pattern=IDENT_PATTERN, description="identifier (1..128)")]
AppSlug = Annotated[str, msgspec.Meta(pattern=APP_PATTERN, description="app slug")]
Filename = Annotated[str, msgspec.Meta(pattern=FILENAME_PATTERN, description="file name")]
Bucket = Annotated[str, msgspec.Meta(pattern=BUCKET_PATTERN, description="S3 bucket")]
ObjectKey = Annotated[str, msgspec.Meta(pattern=OBJECT_KEY_PATTERN, description="object key")]
HttpsUrl = Annotated[str, msgspec.Meta(pattern=HTTPS_URL_PATTERN, max_length=2048)]
DownloadUrl = Annotated[str, msgspec.Meta(pattern=DOWNLOAD_URL_PATTERN, max_length=4096)]
Colour = Annotated[str, msgspec.Meta(pattern=COLOUR_PATTERN, description="#RRGGBB")]
Email = Annotated[
    str, msgspec.Meta(pattern=EMAIL_PATTERN, max_length=254, description="e-mail address")
]
Text = Annotated[str, msgspec.Meta(max_length=2000, pattern=_LINE_PATTERN)]
Count = Annotated[int, msgspec.Meta(ge=0)]
Credits = Annotated[int, msgspec.Meta(ge=0, description="credits (whole numbers)")]
AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True, description="RFC 3339, with offset")]
#: Most images one request may hold (the contract's ceiling; settings may lower it).
MAX_IMAGES: Final = 500
#: Position of an image in its batch (0-based).
ImageIndex = Annotated[int, msgspec.Meta(ge=0, le=MAX_IMAGES - 1)]
#: Largest `crop_margin` in pixels.
MAX_CROP_MARGIN: Final = 1000
#: Source image formats the service reads, as (Pillow's format name, the name in docs):
#: the one list behind decoding and the `unsupported_format` text of the contract.
INPUT_FORMATS: Final = (("PNG", "PNG"), ("JPEG", "JPEG"), ("WEBP", "WebP"))
#: The accepted formats in prose: "PNG, JPEG or WebP".
INPUT_FORMATS_TEXT: Final = (
    ", ".join(name for _, name in INPUT_FORMATS[:-1]) + " or " + INPUT_FORMATS[-1][1]
)
#: The background a JPEG gets when the options name none (JPEG has no alpha).
JPEG_DEFAULT_BACKGROUND: Final = "#FFFFFF"


class Message(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base of every message this service owns: immutable, unknown fields refused."""


class ForeignEvent(msgspec.Struct, frozen=True, kw_only=True):
    """Base of events other apps own: unknown fields are ignored (they may add some)."""


class Correlation(Message, frozen=True, kw_only=True):
    """Who asked, echoed on every event a request causes (`app` slug + opaque `ref`)."""

    app: AppSlug
    ref: Annotated[str, msgspec.Meta(min_length=1, max_length=256, pattern=_LINE_PATTERN)]


class ObjectRef(Message, frozen=True, kw_only=True):
    """An object in the object store."""

    bucket: Bucket
    key: ObjectKey


class ImageRef(Message, omit_defaults=True, frozen=True, kw_only=True):
    """Where an image is: EITHER `{bucket, key}` (object store) OR `{url}` (https)."""

    bucket: Bucket | None = None
    key: ObjectKey | None = None
    url: HttpsUrl | None = None

    def __post_init__(self) -> None:
        stored = self.bucket is not None or self.key is not None
        if stored and self.url is not None:
            raise ValueError("give either bucket and key, or url, not both")
        if stored and (self.bucket is None or self.key is None):
            raise ValueError("bucket and key go together")
        if not stored and self.url is None:
            raise ValueError("give either bucket and key, or url")

    @property
    def object(self) -> ObjectRef | None:
        """The `{bucket, key}` form as an `ObjectRef`, or None for a URL."""
        if self.bucket is None or self.key is None:
            return None
        return ObjectRef(bucket=self.bucket, key=self.key)


_STRING: Final = {"type": "string"}
_NULL: Final = {"type": "null"}
#: The either/or rule of `ImageRef`, stated for JSON Schema readers.
IMAGE_REF_ONE_OF: Final = {
    "oneOf": [
        {
            "title": "object",
            "required": ["bucket", "key"],
            "properties": {"bucket": _STRING, "key": _STRING, "url": _NULL},
        },
        {
            "title": "url",
            "required": ["url"],
            "properties": {"url": _STRING, "bucket": _NULL, "key": _NULL},
        },
    ]
}
#: Use this annotation (not bare `ImageRef`) on fields, so schemas carry the `oneOf`.
ImageRefField = Annotated[ImageRef, msgspec.Meta(extra_json_schema=IMAGE_REF_ONE_OF)]


class OutputOptions(Message, frozen=True, kw_only=True):
    """How results are rendered; the same for every engine.

    - `background`: None keeps transparency (PNG/WebP); a colour fills it. JPEG has
      no alpha: without a colour it gets `#FFFFFF` (see `effective_background`).
    - `crop_to_subject` crops to the subject's bounding box plus `crop_margin`
      pixels; a margin without cropping is refused.
    - `mask_only` returns the greyscale matte itself; a background colour then
      means nothing and is refused.
    """

    format: OutputFormat = OutputFormat.PNG
    background: Colour | None = None
    crop_to_subject: bool = False
    crop_margin: Annotated[int, msgspec.Meta(ge=0, le=MAX_CROP_MARGIN)] = 0
    mask_only: bool = False

    def __post_init__(self) -> None:
        if self.crop_margin and not self.crop_to_subject:
            raise ValueError("crop_margin needs crop_to_subject")
        if self.mask_only and self.background is not None:
            raise ValueError("mask_only returns the matte: a background means nothing")

    @property
    def effective_background(self) -> str | None:
        """The colour to composite on: the given one, white for JPEG, else None."""
        if self.background is None and self.format is OutputFormat.JPEG and not self.mask_only:
            return JPEG_DEFAULT_BACKGROUND
        return self.background
