"""`ObjectStore` on a local directory, for the embedded (demo) mode and tests.

Objects live at `root/<bucket>/<key>`; each object's content type and ETag live in a
JSON sidecar at `root/.meta/<bucket>/<key>.json` (".meta" can never be a bucket name,
so sidecars cannot collide with objects). Writes go to a temporary file that is then
renamed, so a reader never sees half an object. Limitation: a key cannot be both an
object and a "directory" of other keys (`a` and `a/b`), which S3 allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from lumiku_bgremover.storage.base import (
    DEFAULT_CONTENT_TYPE,
    InvalidKey,
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

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence
    from typing import BinaryIO

    from lumiku_bgremover.storage.lifecycle import ExpiryRule

_META_DIR = ".meta"
_COPY_CHUNK = 1024 * 1024


class LocalObjectStore:
    """An `ObjectStore` on a directory; reads may also name allow-listed buckets."""

    def __init__(self, root: Path, bucket: str, *, allowed_buckets: Iterable[str] = ()) -> None:
        self._root = Path(root).resolve()
        self._bucket = validate_bucket(bucket)
        self._allowed = frozenset(validate_bucket(b) for b in allowed_buckets)

    @property
    def bucket(self) -> str:
        """The bucket (sub-directory of the root) this store writes to."""
        return self._bucket

    @property
    def root(self) -> Path:
        """The directory holding every bucket."""
        return self._root

    async def ensure_bucket(self) -> None:
        """Create the bucket directory (and the root) when missing."""
        await asyncio.to_thread((self._root / self._bucket).mkdir, parents=True, exist_ok=True)

    async def bucket_exists(self) -> bool:
        """Whether the bucket directory exists."""
        return await asyncio.to_thread((self._root / self._bucket).is_dir)

    async def apply_retention(self, rules: Sequence[ExpiryRule]) -> None:
        """Retention is not applied to a local directory (the embedded mode keeps all)."""
        del rules

    async def put_bytes(
        self, key: str, data: bytes, content_type: str = DEFAULT_CONTENT_TYPE
    ) -> ObjectInfo:
        """Store `data` under `key` atomically."""
        validate_key(key)
        return await asyncio.to_thread(self._write, key, [data], content_type)

    async def put_stream(
        self, key: str, stream: BinaryIO, *, content_type: str, part_size: int
    ) -> ObjectInfo:
        """Copy a stream of unknown length atomically (`part_size` is checked, as for S3)."""
        validate_key(key)
        validate_part_size(part_size)
        return await asyncio.to_thread(self._write, key, _chunks(stream), content_type)

    async def get_bytes(self, key: str, *, bucket: str | None = None, max_bytes: int) -> bytes:
        """The object's bytes, reading at most `max_bytes + 1` of them."""
        validate_key(key)
        validate_max_bytes(max_bytes)
        source = resolve_bucket(self._bucket, self._allowed, bucket)
        return await asyncio.to_thread(self._read_sync, source, key, max_bytes)

    async def stat(self, key: str, *, bucket: str | None = None) -> ObjectInfo:
        """The object's size, content type and ETag; `ObjectNotFound` when missing."""
        validate_key(key)
        source = resolve_bucket(self._bucket, self._allowed, bucket)
        return await asyncio.to_thread(self._stat_sync, source, key)

    async def exists(self, key: str, *, bucket: str | None = None) -> bool:
        """Whether the object exists."""
        validate_key(key)
        source = resolve_bucket(self._bucket, self._allowed, bucket)
        return await asyncio.to_thread(lambda: self._path(source, key).is_file())

    async def delete(self, key: str) -> None:
        """Remove the object and its sidecar; removing a missing object succeeds."""
        validate_key(key)
        await asyncio.to_thread(self._delete_sync, key)

    async def presigned_get_url(self, key: str, *, ttl_s: int) -> str:
        """A `file://` URI of the object: usable only on this machine (embedded/demo mode).

        There is nothing to sign, so `ttl_s` is only validated; the URI does not expire.
        """
        validate_key(key)
        validate_ttl(ttl_s)
        return await asyncio.to_thread(lambda: self._path(self._bucket, key).as_uri())

    def _path(self, bucket: str, key: str) -> Path:
        """The object's file, refusing any key that would leave the bucket directory."""
        validate_key(key)
        base = self._root / validate_bucket(bucket)
        path = (base / key).resolve()  # follows symbolic links, so they cannot escape either
        if path == base or not path.is_relative_to(base):
            raise InvalidKey(f"object key escapes its bucket: {key!r}")
        return path

    def _meta_path(self, bucket: str, key: str) -> Path:
        return self._root / _META_DIR / bucket / f"{key}.json"

    def _write(self, key: str, chunks: Iterable[bytes], content_type: str) -> ObjectInfo:
        path = self._path(self._bucket, key)
        with _os_errors(self._bucket, key):
            size, etag = _atomic_write(path, chunks)
            meta = json.dumps({"content_type": content_type, "etag": etag}).encode()
            _atomic_write(self._meta_path(self._bucket, key), [meta])
        return ObjectInfo(self._bucket, key, size, content_type, etag)

    def _read_sync(self, bucket: str, key: str, max_bytes: int) -> bytes:
        path = self._path(bucket, key)
        with _os_errors(bucket, key):
            try:
                with path.open("rb") as src:
                    data = _read_at_most(src, max_bytes + 1)
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                raise ObjectNotFound(bucket, key) from None
            if len(data) > max_bytes:
                raise ObjectTooLarge(bucket, key, max_bytes, path.stat().st_size)
        return data

    def _stat_sync(self, bucket: str, key: str) -> ObjectInfo:
        path = self._path(bucket, key)
        with _os_errors(bucket, key):
            if not path.is_file():
                raise ObjectNotFound(bucket, key)
            size = path.stat().st_size
            meta = _read_meta(self._meta_path(bucket, key))
            etag = meta.get("etag") or _md5_file(path)
        content_type = meta.get("content_type") or DEFAULT_CONTENT_TYPE
        return ObjectInfo(bucket, key, size, content_type, etag)

    def _delete_sync(self, key: str) -> None:
        path = self._path(self._bucket, key)
        meta = self._meta_path(self._bucket, key)
        with _os_errors(self._bucket, key):
            path.unlink(missing_ok=True)
            meta.unlink(missing_ok=True)
            _prune_empty_dirs(path.parent, self._root / self._bucket)
            _prune_empty_dirs(meta.parent, self._root / _META_DIR / self._bucket)


def _chunks(stream: BinaryIO) -> Iterator[bytes]:
    while chunk := stream.read(_COPY_CHUNK):
        yield chunk


def _atomic_write(path: Path, chunks: Iterable[bytes]) -> tuple[int, str]:
    """Write `chunks` to a temporary file beside `path`, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.md5(usedforsecurity=False)
    size = 0
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return size, digest.hexdigest()


def _read_meta(path: Path) -> dict[str, str]:
    try:
        raw = json.loads(path.read_bytes())
    except (FileNotFoundError, ValueError):
        return {}
    return {k: v for k, v in raw.items() if isinstance(v, str)} if isinstance(raw, dict) else {}


def _md5_file(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as src:
        while chunk := src.read(_COPY_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _prune_empty_dirs(directory: Path, stop: Path) -> None:
    """Remove now-empty parent directories of a deleted object, up to (not including) `stop`."""
    while directory != stop and directory.is_relative_to(stop):
        try:
            directory.rmdir()
        except OSError:
            return
        directory = directory.parent


@contextlib.contextmanager
def _os_errors(bucket: str, key: str) -> Iterator[None]:
    """Report file-system failures as `StorageError` (ours pass through)."""
    try:
        yield
    except StorageError:
        raise
    except OSError as exc:
        raise StorageError(f"local store failed on {bucket}/{key}: {exc}") from exc


def _read_at_most(src: BinaryIO, limit: int, chunk: int = 1 << 20) -> bytes:
    """Up to `limit` bytes, read in chunks (`read(limit)` would reserve `limit` up front)."""
    parts: list[bytes] = []
    left = limit
    while left > 0:
        part = src.read(min(chunk, left))
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)
