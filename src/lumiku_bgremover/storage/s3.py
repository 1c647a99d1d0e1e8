"""`ObjectStore` on any S3 API server (MinIO in production) through the `minio` client.

The client is synchronous, so every call runs in a worker thread (`asyncio.to_thread`),
never on the event loop.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from io import BytesIO
from typing import TYPE_CHECKING, Any, TypeVar

from minio import Minio
from minio.error import S3Error
from minio.lifecycleconfig import LifecycleConfig

from lumiku_bgremover.storage.base import (
    DEFAULT_CONTENT_TYPE,
    ObjectInfo,
    ObjectNotFound,
    ObjectTooLarge,
    StorageError,
    resolve_bucket,
    validate_bucket,
    validate_key,
    validate_max_bytes,
    validate_part_size,
    validate_ttl,
)
from lumiku_bgremover.storage.lifecycle import ExpiryRule, lifecycle_rules, merge_rules

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from typing import BinaryIO

    from lumiku_bgremover.settings import S3Settings

_NOT_FOUND = frozenset({"NoSuchKey", "NoSuchBucket", "NoSuchObject", "ResourceNotFound"})
_BUCKET_EXISTS = frozenset({"BucketAlreadyOwnedByYou", "BucketAlreadyExists"})

T = TypeVar("T")


class _CountingReader:
    """Wraps a binary stream and counts the bytes read through it."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._stream.read(size)
        self.count += len(chunk)
        return chunk


class S3ObjectStore:
    """An `ObjectStore` on one S3 bucket, reading also from allow-listed buckets."""

    def __init__(
        self,
        client: Minio,
        bucket: str,
        *,
        region: str,
        allowed_buckets: Iterable[str] = (),
    ) -> None:
        self._client = client
        self._bucket = validate_bucket(bucket)
        self._region = region
        self._allowed = frozenset(allowed_buckets)

    @classmethod
    def from_settings(cls, settings: S3Settings) -> S3ObjectStore:
        """A store with its own client built from `settings`."""
        client = Minio(
            settings.endpoint,
            access_key=settings.access_key,
            secret_key=settings.secret_key,
            secure=settings.secure,
            region=settings.region,
        )
        return cls(
            client,
            settings.bucket,
            region=settings.region,
            allowed_buckets=settings.allowed_buckets,
        )

    @property
    def bucket(self) -> str:
        """The bucket this store writes to."""
        return self._bucket

    async def ensure_bucket(self) -> None:
        """Create the bucket when it does not exist (a concurrent creation is fine)."""
        await asyncio.to_thread(self._ensure_bucket_sync)

    async def bucket_exists(self) -> bool:
        """Whether the bucket exists (a health check: it also proves the server answers)."""
        return await asyncio.to_thread(self._client.bucket_exists, self._bucket)

    async def apply_retention(self, rules: Sequence[ExpiryRule]) -> None:
        """Replace our lifecycle rules with `rules`; rules added by hand are kept."""
        await asyncio.to_thread(self._apply_retention_sync, rules)

    async def put_bytes(
        self, key: str, data: bytes, content_type: str = DEFAULT_CONTENT_TYPE
    ) -> ObjectInfo:
        """Store `data` under `key` in one request."""
        validate_key(key)
        return await asyncio.to_thread(self._put_bytes_sync, key, data, content_type)

    async def put_stream(
        self, key: str, stream: BinaryIO, *, content_type: str, part_size: int
    ) -> ObjectInfo:
        """Store a stream of unknown length as a multipart upload of `part_size` parts."""
        validate_key(key)
        validate_part_size(part_size)
        return await asyncio.to_thread(self._put_stream_sync, key, stream, content_type, part_size)

    async def get_bytes(self, key: str, *, bucket: str | None = None, max_bytes: int) -> bytes:
        """The object's bytes; a ranged read of `max_bytes + 1` enforces the limit."""
        validate_key(key)
        validate_max_bytes(max_bytes)
        source = resolve_bucket(self._bucket, self._allowed, bucket)
        return await asyncio.to_thread(self._get_bytes_sync, source, key, max_bytes)

    async def stat(self, key: str, *, bucket: str | None = None) -> ObjectInfo:
        """The object's metadata; `ObjectNotFound` when it (or its bucket) is missing."""
        validate_key(key)
        source = resolve_bucket(self._bucket, self._allowed, bucket)
        return await asyncio.to_thread(self._stat_sync, source, key)

    async def exists(self, key: str, *, bucket: str | None = None) -> bool:
        """Whether the object exists."""
        try:
            await self.stat(key, bucket=bucket)
        except ObjectNotFound:
            return False
        return True

    async def delete(self, key: str) -> None:
        """Remove the object; removing a missing object succeeds."""
        validate_key(key)
        await asyncio.to_thread(self._call, self._bucket, key, self._client.remove_object)

    async def presigned_get_url(self, key: str, *, ttl_s: int) -> str:
        """A presigned GET URL (signed locally; the region is known, so no request)."""
        validate_key(key)
        expires = timedelta(seconds=validate_ttl(ttl_s))
        return await asyncio.to_thread(
            self._call, self._bucket, key, self._client.presigned_get_object, expires=expires
        )

    @staticmethod
    def _call(bucket: str, key: str, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one client method on `bucket`/`key`, mapping its errors to ours."""
        try:
            return method(bucket, key, *args, **kwargs)
        except S3Error as exc:
            raise _map_error(exc, bucket, key) from exc

    def _ensure_bucket_sync(self) -> None:
        try:
            if self._client.bucket_exists(self._bucket):
                return
            self._client.make_bucket(self._bucket, location=self._region)
        except S3Error as exc:
            if exc.code not in _BUCKET_EXISTS:
                raise StorageError(f"S3 {exc.code} creating {self._bucket}") from exc

    def _apply_retention_sync(self, rules: Sequence[ExpiryRule]) -> None:
        live = self._client.get_bucket_lifecycle(self._bucket)
        wanted = merge_rules(live.rules if live else [], lifecycle_rules(rules))
        if wanted:
            self._client.set_bucket_lifecycle(self._bucket, LifecycleConfig(wanted))
        elif live is not None:
            self._client.delete_bucket_lifecycle(self._bucket)

    def _put_bytes_sync(self, key: str, data: bytes, content_type: str) -> ObjectInfo:
        put = self._client.put_object
        result = self._call(self._bucket, key, put, BytesIO(data), len(data), content_type)
        return ObjectInfo(self._bucket, key, len(data), content_type, _etag(result.etag))

    def _put_stream_sync(
        self, key: str, stream: BinaryIO, content_type: str, part_size: int
    ) -> ObjectInfo:
        reader = _CountingReader(stream)
        put = self._client.put_object
        result = self._call(self._bucket, key, put, reader, -1, content_type, part_size=part_size)
        return ObjectInfo(self._bucket, key, reader.count, content_type, _etag(result.etag))

    def _get_bytes_sync(self, bucket: str, key: str, max_bytes: int) -> bytes:
        try:
            response = self._client.get_object(bucket, key, 0, max_bytes + 1)
        except S3Error as exc:
            if exc.code == "InvalidRange":
                return b""  # a range starting at 0 is unsatisfiable only for an empty object
            raise _map_error(exc, bucket, key) from exc
        try:
            data: bytes = response.read(max_bytes + 1)
            total = _total_size(response.headers.get("Content-Range"))
        finally:
            response.close()
            response.release_conn()
        if len(data) > max_bytes:
            raise ObjectTooLarge(bucket, key, max_bytes, total)
        return data

    def _stat_sync(self, bucket: str, key: str) -> ObjectInfo:
        obj = self._call(bucket, key, self._client.stat_object)
        return ObjectInfo(
            bucket=bucket,
            key=key,
            size=int(obj.size or 0),
            content_type=obj.content_type or DEFAULT_CONTENT_TYPE,
            etag=_etag(obj.etag),
        )


def _map_error(exc: S3Error, bucket: str, key: str) -> StorageError:
    if exc.code in _NOT_FOUND:
        return ObjectNotFound(bucket, key)
    return StorageError(f"S3 {exc.code} on {bucket}/{key}: {exc.message}")


def _etag(raw: str | None) -> str:
    return (raw or "").strip('"')


def _total_size(content_range: str | None) -> int | None:
    """The full object size from a `Content-Range: bytes 0-N/TOTAL` header."""
    if not content_range or "/" not in content_range:
        return None
    total = content_range.rsplit("/", 1)[1].strip()
    return int(total) if total.isdigit() else None
