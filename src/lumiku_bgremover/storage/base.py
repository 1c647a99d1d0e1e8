"""The object-store interface shared by the S3 and local implementations, and key rules.

Everything here is pure: the Protocol, the typed errors and the validation functions
that both implementations (and the handlers that build keys) rely on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import BinaryIO

    from lumiku_bgremover.storage.lifecycle import ExpiryRule

MIB = 1024 * 1024
#: Smallest part an S3 multipart upload accepts (all parts but the last).
MIN_PART_SIZE = 5 * MIB
#: Largest part an S3 multipart upload accepts.
MAX_PART_SIZE = 5 * 1024 * MIB
#: Longest key S3 accepts, in UTF-8 bytes.
MAX_KEY_BYTES = 1024
#: Longest lifetime S3 (SigV4) allows for a presigned URL.
MAX_PRESIGN_TTL_S = 7 * 24 * 3600
#: Content type used when a caller or a stored object gives none.
DEFAULT_CONTENT_TYPE = "application/octet-stream"
#: Prefix of the short-lived copies of engine inputs lent to a provider by presigned URL
#: (SEGMIND_IMAGE_TRANSPORT=url); each is deleted after its call, a lifecycle rule backs it.
ENGINE_INPUTS_PREFIX = "engine-inputs/"

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


class StorageError(Exception):
    """An object-store operation failed."""


class ObjectNotFound(StorageError):  # noqa: N818 - the name reads as the condition it reports
    """The object (or its bucket) does not exist."""

    def __init__(self, bucket: str, key: str) -> None:
        super().__init__(f"object not found: {bucket}/{key}")
        self.bucket = bucket
        self.key = key


class ObjectTooLarge(StorageError):  # noqa: N818
    """The object is larger than the caller's limit; at most `limit + 1` bytes were read."""

    def __init__(self, bucket: str, key: str, limit: int, size: int | None = None) -> None:
        actual = f"{size} bytes" if size is not None else "more"
        super().__init__(f"object {bucket}/{key} is larger than {limit} bytes ({actual})")
        self.bucket = bucket
        self.key = key
        self.limit = limit
        self.size = size


class InvalidKey(StorageError, ValueError):  # noqa: N818
    """An object key (or bucket name) breaks the rules of `validate_key` / `validate_bucket`."""


class BucketNotAllowed(StorageError):  # noqa: N818
    """A read named a bucket that is neither the store's own nor allow-listed."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What the store knows about one stored object."""

    bucket: str
    key: str
    size: int
    content_type: str
    etag: str


@runtime_checkable
class ObjectStore(Protocol):
    """An S3-like object store bound to one bucket (plus allow-listed buckets to read).

    Every method is a coroutine; implementations do their blocking I/O in worker threads.
    """

    @property
    def bucket(self) -> str:
        """The bucket this store writes to."""
        ...

    async def ensure_bucket(self) -> None:
        """Create the store's bucket when it does not exist yet."""
        ...

    async def bucket_exists(self) -> bool:
        """Whether the store's bucket exists (readiness: the store answers)."""
        ...

    async def apply_retention(self, rules: Sequence[ExpiryRule]) -> None:
        """Make `rules` the bucket's expiry rules (stores without expiry ignore them)."""
        ...

    async def put_bytes(
        self, key: str, data: bytes, content_type: str = DEFAULT_CONTENT_TYPE
    ) -> ObjectInfo:
        """Store `data` under `key`, replacing any object there."""
        ...

    async def put_stream(
        self, key: str, stream: BinaryIO, *, content_type: str, part_size: int
    ) -> ObjectInfo:
        """Store a stream of unknown length (multipart upload in `part_size` parts)."""
        ...

    async def get_bytes(self, key: str, *, bucket: str | None = None, max_bytes: int) -> bytes:
        """The object's bytes; `ObjectTooLarge` past `max_bytes` (reading at most one more)."""
        ...

    async def stat(self, key: str, *, bucket: str | None = None) -> ObjectInfo:
        """The object's metadata; `ObjectNotFound` when it does not exist."""
        ...

    async def exists(self, key: str, *, bucket: str | None = None) -> bool:
        """Whether the object exists."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object from the store's bucket; a missing object is not an error."""
        ...

    async def presigned_get_url(self, key: str, *, ttl_s: int) -> str:
        """A URL that lets its holder download the object for `ttl_s` seconds."""
        ...


def validate_key(key: str) -> str:
    """Return `key` when it is a safe object key, else raise `InvalidKey`.

    Safe: non-empty, at most 1024 UTF-8 bytes, no leading "/", no backslash, no control
    characters, and no empty, "." or ".." path segments.
    """
    if not key:
        raise InvalidKey("object key is empty")
    if len(key.encode("utf-8", errors="surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidKey(f"object key is longer than {MAX_KEY_BYTES} bytes")
    if key.startswith("/"):
        raise InvalidKey(f"object key starts with '/': {key!r}")
    if "\\" in key:
        raise InvalidKey(f"object key contains a backslash: {key!r}")
    if _CONTROL_RE.search(key):
        raise InvalidKey(f"object key contains a control character: {key!r}")
    if any(segment in {"", ".", ".."} for segment in key.split("/")):
        raise InvalidKey(f"object key has an empty, '.' or '..' segment: {key!r}")
    return key


def validate_bucket(bucket: str) -> str:
    """Return `bucket` when it is a valid S3 bucket name (3-63 of a-z 0-9 . -), else raise."""
    if not _BUCKET_RE.fullmatch(bucket) or ".." in bucket:
        raise InvalidKey(f"invalid bucket name: {bucket!r}")
    return bucket


def validate_part_size(part_size: int) -> int:
    """Return `part_size` when S3 multipart uploads accept it (5 MiB to 5 GiB)."""
    if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
        raise ValueError(f"part_size must be between {MIN_PART_SIZE} and {MAX_PART_SIZE}")
    return part_size


def validate_ttl(ttl_s: int) -> int:
    """Return `ttl_s` when it is a valid presigned-URL lifetime (1 s to 7 days)."""
    if not 1 <= ttl_s <= MAX_PRESIGN_TTL_S:
        raise ValueError(f"ttl_s must be between 1 and {MAX_PRESIGN_TTL_S} seconds")
    return ttl_s


def validate_max_bytes(max_bytes: int) -> int:
    """Return `max_bytes` when it is a usable read limit (not negative)."""
    if max_bytes < 0:
        raise ValueError("max_bytes must not be negative")
    return max_bytes


def resolve_bucket(own: str, allowed: frozenset[str], bucket: str | None) -> str:
    """The bucket a read should use: the store's own, or an allow-listed one."""
    if bucket is None or bucket == own:
        return own
    if bucket not in allowed:
        raise BucketNotAllowed(f"bucket {bucket!r} is not allow-listed for reads")
    return bucket
