"""The batch ZIP, streamed into the object store: never whole in memory, never on disk.

`build_archive` runs three things at once:

- the event loop fetches the entries, one at a time (`store.get_bytes`);
- a writer thread feeds them to a stdlib `zipfile.ZipFile` writing to a `BytePipe`; the
  pipe cannot seek, so `zipfile` puts each entry's CRC and sizes in a data descriptor;
- an upload thread runs `store.put_stream` on the other end of the pipe (a multipart
  upload of unknown length on S3).

The pipe holds at most `PIPE_PARTS` parts, so memory stays near one entry plus a few
parts whatever the number of entries, and a slow upload slows the writer down. A failed
upload stops the writer; a failed writer (or a cancelled caller) makes the upload's next
read raise, so S3 aborts the multipart upload and the local store drops its temporary
file: no partial archive is ever visible. (A caller cancelled after the last byte was
handed over gets its CancelledError, but the upload still completes.)

The upload runs `store.put_stream` on a private event loop in a dedicated thread, not on
the caller's loop: a stream upload waits on the writer for its whole length, and holding a
thread of the loop's default executor for that long would let a few concurrent archives
starve the executor that `get_bytes` needs (a deadlock). Stores must therefore not bind
to one event loop; `S3ObjectStore` and `LocalObjectStore` do not.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import zipfile
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, cast

from lumiku_bgremover.storage.base import (
    MIB,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    StorageError,
    validate_key,
    validate_max_bytes,
    validate_part_size,
)
from lumiku_bgremover.storage.zipnames import case_duplicates, is_safe_zip_name

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

#: Default multipart part size of the archive upload.
DEFAULT_PART_SIZE = 8 * MIB
#: Capacity of the pipe between the ZIP writer and the upload, in parts.
PIPE_PARTS = 2
#: Largest piece the pipe stores as one `bytes` (splitting a read copies at most this).
PIPE_CHUNK = MIB
#: Content type of the stored archive.
ZIP_CONTENT_TYPE = "application/zip"
#: Unix permissions recorded for every entry (rw-r--r--, a regular file).
_ENTRY_MODE = 0o100644 << 16


class ArchiveEntryMissing(StorageError):  # noqa: N818 - the name reads as the condition it reports
    """An entry's source object no longer exists; the archive was not stored."""

    def __init__(self, entry: ArchiveEntry, bucket: str) -> None:
        super().__init__(f"archive entry {entry.name!r}: object {bucket}/{entry.key} is gone")
        self.entry = entry
        self.bucket = bucket


class ArchiveAborted(StorageError):  # noqa: N818
    """Raised to the upload by the pipe when the ZIP writer failed or was cancelled."""


class _UploadStoppedError(StorageError):
    """Raised to the ZIP writer by the pipe when the upload stopped reading."""


@dataclass(frozen=True, slots=True)
class ArchiveEntry:
    """One file of the archive: its name inside the ZIP and the object holding its bytes.

    `bucket` None means the store's own bucket (else an allow-listed one).
    """

    name: str
    key: str
    bucket: str | None = None


class BytePipe:
    """A bounded, thread-safe byte pipe: one thread writes, another reads.

    `write` blocks while `capacity` bytes wait unread; `read(n)` blocks until it can
    return `n` bytes (fewer only at end of stream, or when `n` exceeds the capacity).
    The writer ends the stream with `close()` or `fail(exc)`; after `fail` the reader's
    next `read` raises `ArchiveAborted`. The reader gives up with `cancel()`; the writer's
    next `write` then raises. Not seekable, so `zipfile` writes data descriptors.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self._capacity = capacity
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._closed = False
        self._error: BaseException | None = None
        self._cancelled = False
        self._cond = threading.Condition()

    @property
    def buffered(self) -> int:
        """Bytes written and not yet read."""
        with self._cond:
            return self._buffered

    def write(self, b: bytes | bytearray | memoryview, /) -> int:
        """Append all of `b`, waiting for room; raises once the reader has cancelled."""
        view = memoryview(b).cast("B")
        pos = 0
        with self._cond:
            while pos < len(view):
                self._cond.wait_for(self._writable)
                self._check_writable()
                take = min(len(view) - pos, self._capacity - self._buffered, PIPE_CHUNK)
                self._chunks.append(bytes(view[pos : pos + take]))
                self._buffered += take
                pos += take
                self._cond.notify_all()
        return pos

    def flush(self) -> None:
        """Nothing to flush: written bytes are readable at once."""

    def close(self) -> None:
        """End of stream: the reader gets the remaining bytes, then b""."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def fail(self, exc: BaseException) -> None:
        """End the stream in error: the reader's next `read` raises `ArchiveAborted`."""
        with self._cond:
            if not self._closed:
                self._error = exc
            self._drop()

    def cancel(self) -> None:
        """The reader stops: buffered bytes are dropped and the writer's next write raises."""
        with self._cond:
            self._cancelled = True
            self._drop()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1, /) -> bytes:
        """Up to `size` bytes (all until end of stream when `size` is negative)."""
        if size < 0:
            return b"".join(iter(lambda: self.read(self._capacity), b""))
        with self._cond:
            self._cond.wait_for(lambda: self._ready(size))
            if self._error is not None:
                raise ArchiveAborted(f"the archive writer failed: {self._error!r}")
            data = self._take(size)
            self._cond.notify_all()
            return data

    def _writable(self) -> bool:
        stopped = self._cancelled or self._closed or self._error is not None
        return stopped or self._buffered < self._capacity

    def _check_writable(self) -> None:
        if self._cancelled:
            raise _UploadStoppedError("the upload stopped reading the archive")
        if self._closed or self._error is not None:
            raise ValueError("write to a closed pipe")

    def _ready(self, size: int) -> bool:
        enough = self._buffered >= min(size, self._capacity)
        return enough or self._closed or self._cancelled or self._error is not None

    def _take(self, size: int) -> bytes:
        """Remove and return up to `size` buffered bytes (the lock is held)."""
        parts: list[bytes] = []
        wanted = size
        while wanted and self._chunks:
            chunk = self._chunks.popleft()
            if len(chunk) > wanted:
                self._chunks.appendleft(chunk[wanted:])
                chunk = chunk[:wanted]
            parts.append(chunk)
            wanted -= len(chunk)
        data = b"".join(parts)
        self._buffered -= len(data)
        return data

    def _drop(self) -> None:
        self._chunks.clear()
        self._buffered = 0
        self._cond.notify_all()


async def build_archive(
    store: ObjectStore,
    key: str,
    entries: Sequence[ArchiveEntry],
    *,
    part_size: int = DEFAULT_PART_SIZE,
    max_entry_bytes: int,
) -> ObjectInfo:
    """Stream a ZIP of `entries` into `store` under `key`; its `ObjectInfo` once stored.

    Entries are stored uncompressed (ZIP_STORED: the images are compressed already),
    in order, with ZIP64 records where offsets or the entry count need them. Entry names
    must be safe and unique ignoring case (make them with `zip_names`), else ValueError
    before anything is read. Memory stays near one entry, plus the pipe's `PIPE_PARTS`
    parts, plus what the store holds while uploading (the minio client keeps up to three
    parts in flight and reads the next one): flat in the number of entries.

    Errors (the archive is then not stored, and no partial object is visible):
    `ArchiveEntryMissing` when an entry's object is gone (the caller decides whether to
    retry without it); `ObjectTooLarge` when one exceeds `max_entry_bytes`;
    `BucketNotAllowed` for an entry in a bucket the store may not read; the store's
    error when the upload fails.
    """
    validate_key(key)
    validate_part_size(part_size)
    validate_max_bytes(max_entry_bytes)
    _check_names(entries)
    pipe = BytePipe(PIPE_PARTS * part_size)
    writer = _ZipWriter(pipe)
    upload = _start_upload(store, key, pipe, part_size)
    try:
        await _write_entries(store, entries, writer, max_entry_bytes)
        pipe.close()
    except BaseException as exc:
        pipe.fail(exc)  # the upload's next read raises, so it aborts
        writer.abandon()
        await asyncio.wait([upload])
        if isinstance(exc, _UploadStoppedError):
            raise await _upload_failure(upload, store, key)  # noqa: B904 - its own cause
        raise
    finally:
        writer.shutdown()
    return await upload


def _check_names(entries: Sequence[ArchiveEntry]) -> None:
    unsafe = [e.name for e in entries if not is_safe_zip_name(e.name)]
    if unsafe:
        raise ValueError(f"unsafe archive entry names (use zip_names): {unsafe[:5]!r}")
    repeated = case_duplicates(e.name for e in entries)
    if repeated:
        raise ValueError(f"archive entry names repeat (ignoring case): {repeated[:5]!r}")


def _start_upload(
    store: ObjectStore, key: str, pipe: BytePipe, part_size: int
) -> asyncio.Future[ObjectInfo]:
    """`store.put_stream` reading `pipe`, on a private event loop in its own thread.

    When the upload ends, for whatever reason, the pipe is cancelled so that a writer
    still writing stops; its error is marked retrieved (`build_archive` reports it).
    """
    thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lumiku-archive-upload")
    stream = cast("BinaryIO", pipe)  # read() is all that put_stream uses
    coro = store.put_stream(key, stream, content_type=ZIP_CONTENT_TYPE, part_size=part_size)
    upload = asyncio.get_running_loop().run_in_executor(thread, asyncio.run, coro)
    thread.shutdown(wait=False)  # the thread ends with the upload

    def ended(done: asyncio.Future[ObjectInfo]) -> None:
        pipe.cancel()
        if not done.cancelled():
            done.exception()

    upload.add_done_callback(ended)
    return upload


class _ZipWriter:
    """The ZIP being written into the pipe; its calls run in order on one worker thread."""

    def __init__(self, pipe: BytePipe) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lumiku-archive-zip")
        # The pipe has no tell() or seek(), so zipfile writes data descriptors.
        self._zip = zipfile.ZipFile(pipe, "w", zipfile.ZIP_STORED, allowZip64=True)
        now = time.localtime()
        self._stamp = (now.tm_year, now.tm_mon, now.tm_mday, now.tm_hour, now.tm_min, now.tm_sec)

    async def add(self, name: str, data: bytes) -> None:
        info = _zip_info(name, self._stamp)
        await self._run(self._zip.writestr, info, data)

    async def finish(self) -> None:
        """Write the central directory (with ZIP64 records when needed)."""
        await self._run(self._zip.close)

    def abandon(self) -> None:
        """Release the ZIP after a failure, once the write in progress (if any) has ended.

        Its close fails on the failed pipe but lets go of it, so that the garbage
        collector does not try to close it again.
        """
        self._thread.submit(_close_quietly, self._zip)

    def shutdown(self) -> None:
        self._thread.shutdown(wait=False)

    async def _run(self, func: Callable[..., object], *args: object) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, func, *args)


def _close_quietly(archive: zipfile.ZipFile) -> None:
    with contextlib.suppress(Exception):
        archive.close()


async def _write_entries(
    store: ObjectStore, entries: Sequence[ArchiveEntry], writer: _ZipWriter, max_entry_bytes: int
) -> None:
    for entry in entries:
        data = await _fetch(store, entry, max_entry_bytes)
        await writer.add(entry.name, data)
        del data  # only one entry in memory: drop it before fetching the next
    await writer.finish()


async def _fetch(store: ObjectStore, entry: ArchiveEntry, max_entry_bytes: int) -> bytes:
    try:
        return await store.get_bytes(entry.key, bucket=entry.bucket, max_bytes=max_entry_bytes)
    except ObjectNotFound as exc:
        raise ArchiveEntryMissing(entry, exc.bucket) from exc


def _zip_info(name: str, stamp: tuple[int, int, int, int, int, int]) -> zipfile.ZipInfo:
    """A stored regular file; `zipfile` flags non-ASCII names as UTF-8 (bit 11) itself."""
    info = zipfile.ZipInfo(name, date_time=stamp)
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = _ENTRY_MODE
    info.create_system = 3  # Unix, so that the permissions above are honoured
    return info


async def _upload_failure(
    upload: asyncio.Future[ObjectInfo], store: ObjectStore, key: str
) -> BaseException:
    """Why the upload stopped reading before the end of the archive."""
    failure = upload.exception()
    if failure is not None:
        return failure
    await store.delete(key)  # the store returned early: what it stored is truncated
    return StorageError(f"the store stopped reading archive {key} before its end")
