"""`build_archive`: the batch ZIP streamed into real S3 and the local store; its pipe.

The store tests run one body against the S3 API fixture and `LocalObjectStore`. Failures
are injected with store wrappers (the real store underneath), so S3 really starts and
aborts its multipart uploads.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import io
import logging
import subprocess
import sys
import threading
import time
import tracemalloc
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import pytest
from PIL import Image

from lumiku_bgremover.settings import S3Settings
from lumiku_bgremover.storage import (
    LocalObjectStore,
    ObjectInfo,
    ObjectStore,
    ObjectTooLarge,
    S3ObjectStore,
    StorageError,
)
from lumiku_bgremover.storage.archive import (
    PIPE_PARTS,
    ArchiveAborted,
    ArchiveEntry,
    ArchiveEntryMissing,
    BytePipe,
    build_archive,
)
from lumiku_bgremover.storage.zipnames import zip_names
from tests.fixtures._common import env, free_port, port_open, unavailable, unique_token
from tests.fixtures.s3 import MIB, S3Server, payload

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator, Sequence

pytestmark = pytest.mark.integration
log = logging.getLogger(__name__)

PART = 5 * MIB
ARCHIVE = "archives/u-1/b-1.zip"
DATA_DESCRIPTOR = 0x08
UTF8_NAME = 0x800


# --- fixtures and helpers ----------------------------------------------------------------


def _local_store(root: Path) -> LocalObjectStore:
    (root / "lumiku-test").mkdir(parents=True)
    return LocalObjectStore(root, "lumiku-test")


@pytest.fixture(params=["s3", "local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    """The same test body against the real S3 API server and the local store."""
    if request.param == "s3":
        return S3ObjectStore.from_settings(request.getfixturevalue("s3_settings"))
    return _local_store(tmp_path / "objects")


def png(i: int) -> bytes:
    """A small, real PNG, different for every `i`."""
    out = io.BytesIO()
    Image.new("RGBA", (8 + i, 5), (i * 7 % 256, 40, 200, 128)).save(out, "PNG")
    return out.getvalue()


async def put_sources(store: ObjectStore, blobs: Sequence[bytes]) -> list[str]:
    keys = [f"results/u-1/b-1/{i}.png" for i in range(len(blobs))]
    for key, blob in zip(keys, blobs, strict=True):
        await store.put_bytes(key, blob, "image/png")
    return keys


async def read_zip(store: ObjectStore, key: str = ARCHIVE) -> zipfile.ZipFile:
    return zipfile.ZipFile(io.BytesIO(await store.get_bytes(key, max_bytes=512 * MIB)))


async def assert_no_archive(store: ObjectStore, key: str = ARCHIVE) -> None:
    """No object, and nothing half-written: no pending multipart upload, no temp file."""
    assert not await store.exists(key)
    if isinstance(store, S3ObjectStore):
        listing = await asyncio.to_thread(
            store._client._list_multipart_uploads, store.bucket, prefix=key
        )
        assert listing.uploads == []
    elif isinstance(store, LocalObjectStore):
        bucket_dir = store.root / store.bucket
        assert [p.name for p in bucket_dir.rglob(".tmp-*")] == []


class Wrapper:
    """An `ObjectStore` delegating to `inner`, counting `get_bytes` calls."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.fetched = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def get_bytes(self, key: str, *, bucket: str | None = None, max_bytes: int) -> bytes:
        self.fetched += 1
        return await self.inner.get_bytes(key, bucket=bucket, max_bytes=max_bytes)

    async def put_stream(
        self, key: str, stream: BinaryIO, *, content_type: str, part_size: int
    ) -> ObjectInfo:
        wrapped: Any = self.wrap(stream)
        return await self.inner.put_stream(
            key, wrapped, content_type=content_type, part_size=part_size
        )

    def wrap(self, stream: BinaryIO) -> Any:
        return stream


class FailingUpload(Wrapper):
    """The upload's stream raises once `after` bytes have been read through it."""

    def __init__(self, inner: ObjectStore, after: int) -> None:
        super().__init__(inner)
        self.after = after
        self.read = 0

    def wrap(self, stream: BinaryIO) -> Any:
        outer = self

        class Reader:
            def read(self, size: int = -1) -> bytes:
                if outer.read >= outer.after:
                    raise StorageError("injected upload failure")
                data = stream.read(size)
                outer.read += len(data)
                return data

        return Reader()


class GatedUpload(Wrapper):
    """The upload reads nothing until `gate` is set (a `threading.Event`: the upload runs
    on another thread and event loop)."""

    def __init__(self, inner: ObjectStore) -> None:
        super().__init__(inner)
        self.gate = threading.Event()

    def wrap(self, stream: BinaryIO) -> Any:
        gate = self.gate

        class Reader:
            def read(self, size: int = -1) -> bytes:
                gate.wait()
                return stream.read(size)

        return Reader()


async def wait_for_fetches(wrapper: Wrapper, count: int, timeout_s: float = 8.0) -> float:
    """Seconds until `wrapper.fetched` reached `count` (or `timeout_s` passed)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if wrapper.fetched >= count:
            break
        await asyncio.sleep(0.01)
    return time.monotonic() - started


async def wait_until_stalled(wrapper: Wrapper, timeout_s: float = 5.0) -> None:
    """Wait until `wrapper.fetched` has not moved for 0.3 s."""
    deadline = time.monotonic() + timeout_s
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        if wrapper.fetched != last:
            last, since = wrapper.fetched, time.monotonic()
        elif time.monotonic() - since > 0.3:
            return
        await asyncio.sleep(0.02)


# --- round trips ---------------------------------------------------------------------------

SOURCE_NAMES = [f"shot-{i % 10}.jpg" for i in range(30)] + [
    "../../etc/passwd", "e\u0301te\u0301 \u2600.JPG",
]  # fmt: skip
#: Spelled out, not computed with zip_names: ten names, then " (2)" and " (3)" copies.
EXPECTED_NAMES = [
    f"shot-{i % 10}.png" if i < 10 else f"shot-{i % 10} ({i // 10 + 1}).png" for i in range(30)
] + ["passwd.png", "\u00e9t\u00e9 \u2600.png"]


async def test_archive_round_trip(store: ObjectStore) -> None:
    blobs = [png(i) for i in range(len(SOURCE_NAMES))]
    keys = await put_sources(store, blobs)
    names = zip_names(SOURCE_NAMES, "png")
    assert names == EXPECTED_NAMES
    entries = [ArchiveEntry(n, k) for n, k in zip(names, keys, strict=True)]
    info = await build_archive(store, ARCHIVE, entries, part_size=PART, max_entry_bytes=MIB)
    stat = await store.stat(ARCHIVE)
    assert (info.key, info.content_type) == (ARCHIVE, "application/zip")
    assert (stat.size, stat.content_type, stat.etag) == (info.size, info.content_type, info.etag)
    archive = await read_zip(store)
    assert archive.testzip() is None
    assert archive.namelist() == EXPECTED_NAMES
    for item, blob in zip(archive.infolist(), blobs, strict=True):
        assert archive.read(item) == blob
        assert item.compress_type == zipfile.ZIP_STORED
        assert item.flag_bits & DATA_DESCRIPTOR  # written as a stream, never seeked back
        assert (item.external_attr >> 16) & 0o777 == 0o644
    assert archive.getinfo("\u00e9t\u00e9 \u2600.png").flag_bits & UTF8_NAME


async def test_multipart_archive_reads_back_intact(store: ObjectStore) -> None:
    blobs = [payload(6 * MIB + i, seed=i) for i in range(3)]  # incompressible
    keys = await put_sources(store, blobs)
    entries = [ArchiveEntry(f"big-{i}.png", k) for i, k in enumerate(keys)]
    info = await build_archive(store, ARCHIVE, entries, part_size=PART, max_entry_bytes=7 * MIB)
    raw = await store.get_bytes(ARCHIVE, max_bytes=64 * MIB)
    assert len(raw) == info.size > 3 * PART
    archive = zipfile.ZipFile(io.BytesIO(raw))
    assert archive.testzip() is None
    assert [archive.read(f"big-{i}.png") for i in range(3)] == blobs
    if isinstance(store, S3ObjectStore):  # a multipart ETag: md5 of the part md5s, "-4"
        parts = [raw[i : i + PART] for i in range(0, len(raw), PART)]
        digests = b"".join(hashlib.md5(p, usedforsecurity=False).digest() for p in parts)
        assert info.etag == f"{hashlib.md5(digests, usedforsecurity=False).hexdigest()}-4"


async def test_entries_from_an_allow_listed_bucket(
    make_s3_settings: Callable[..., Awaitable[S3Settings]],
) -> None:
    other = S3ObjectStore.from_settings(await make_s3_settings())
    own = S3ObjectStore.from_settings(await make_s3_settings(allowed_buckets=(other.bucket,)))
    await other.put_bytes("results/u-1/a.png", png(1))
    await own.put_bytes("results/u-1/b.png", png(2))
    entries = [
        ArchiveEntry("a.png", "results/u-1/a.png", bucket=other.bucket),
        ArchiveEntry("b.png", "results/u-1/b.png"),
    ]
    await build_archive(own, ARCHIVE, entries, max_entry_bytes=MIB)
    archive = await read_zip(own)
    assert [archive.read("a.png"), archive.read("b.png")] == [png(1), png(2)]


async def test_no_entries_is_an_empty_zip(store: ObjectStore) -> None:
    info = await build_archive(store, ARCHIVE, [], max_entry_bytes=MIB)
    assert info.size == 22  # just the end-of-central-directory record
    assert (await read_zip(store)).namelist() == []


# --- failures leave nothing behind -----------------------------------------------------------


async def test_upload_failure_stops_the_writer_and_leaves_no_archive(store: ObjectStore) -> None:
    keys = await put_sources(store, [payload(MIB, seed=i) for i in range(40)])
    entries = [ArchiveEntry(f"{i}.png", k) for i, k in enumerate(keys)]
    failing = FailingUpload(store, after=PART + MIB)  # the first part is already uploaded
    build = build_archive(failing, ARCHIVE, entries, part_size=PART, max_entry_bytes=MIB)
    with pytest.raises(StorageError, match="injected upload failure"):
        await asyncio.wait_for(build, timeout=60)  # a writer that never stops would hang
    assert failing.read > PART
    # the writer stopped: at most the pipe's worth of entries past the failure point
    assert failing.fetched <= (failing.read + PIPE_PARTS * PART) // MIB + 2 < len(entries)
    await assert_no_archive(store)


async def test_missing_entry_raises_and_leaves_no_archive(store: ObjectStore) -> None:
    keys = await put_sources(store, [payload(MIB, seed=i) for i in range(12)])
    await store.delete(keys[9])  # gone after its batch item finished
    entries = [ArchiveEntry(f"{i}.png", k) for i, k in enumerate(keys)]
    with pytest.raises(ArchiveEntryMissing) as caught:
        await build_archive(store, ARCHIVE, entries, part_size=PART, max_entry_bytes=MIB)
    assert caught.value.entry == entries[9]
    assert caught.value.bucket == store.bucket
    assert keys[9] in str(caught.value)
    await assert_no_archive(store)  # 9 MiB were written: S3 had a multipart upload to abort


async def test_too_large_entry_raises_and_leaves_no_archive(store: ObjectStore) -> None:
    keys = await put_sources(store, [png(1), payload(2 * MIB)])
    entries = [ArchiveEntry("a.png", keys[0]), ArchiveEntry("b.png", keys[1])]
    with pytest.raises(ObjectTooLarge):
        await build_archive(store, ARCHIVE, entries, max_entry_bytes=MIB)
    await assert_no_archive(store)


@pytest.mark.parametrize(
    ("names", "match"),
    [
        (["../a.png"], "unsafe"),
        (["CON.png"], "unsafe"),
        (["a.png", "b.png", "A.PNG"], "repeat"),
    ],
)
async def test_bad_names_are_refused_before_anything_is_read(
    tmp_path: Path, names: list[str], match: str
) -> None:
    spy = Wrapper(_local_store(tmp_path))
    entries = [ArchiveEntry(n, f"k/{i}") for i, n in enumerate(names)]
    with pytest.raises(ValueError, match=match):
        await build_archive(spy, ARCHIVE, entries, max_entry_bytes=MIB)
    assert spy.fetched == 0
    await assert_no_archive(spy.inner)


class EarlyReturn(Wrapper):
    """A broken store: stores the first MiB of the stream and returns without the rest."""

    async def put_stream(
        self, key: str, stream: BinaryIO, *, content_type: str, part_size: int
    ) -> ObjectInfo:
        head = stream.read(MIB)
        return await self.inner.put_bytes(key, head, content_type)


async def test_a_store_that_stops_reading_early_leaves_no_truncated_archive(
    store: ObjectStore,
) -> None:
    keys = await put_sources(store, [payload(MIB, seed=i) for i in range(30)])
    entries = [ArchiveEntry(f"{i}.png", k) for i, k in enumerate(keys)]
    with pytest.raises(StorageError, match="stopped reading"):
        await build_archive(EarlyReturn(store), ARCHIVE, entries, part_size=PART,
                            max_entry_bytes=MIB)  # fmt: skip
    await assert_no_archive(store)


# --- backpressure, the event loop, cancellation -------------------------------------------


async def test_a_slow_upload_holds_the_writer_back_without_blocking_the_loop(
    store: ObjectStore,
) -> None:
    keys = await put_sources(store, [payload(MIB, seed=i) for i in range(40)])
    entries = [ArchiveEntry(f"{i}.png", k) for i, k in enumerate(keys)]
    gated = GatedUpload(store)
    safety = threading.Timer(10, gated.gate.set)  # if the loop were blocked, unblock it
    safety.start()
    try:
        task = asyncio.create_task(
            build_archive(gated, ARCHIVE, entries, part_size=PART, max_entry_bytes=MIB)
        )
        # the pipe holds PIPE_PARTS parts: 9 entries fit, the 10th waits half-written
        expected = PIPE_PARTS * PART // MIB
        assert await wait_for_fetches(gated, expected) < 8, "the event loop was blocked"
        await asyncio.sleep(0.5)
        assert gated.fetched == expected  # and no further while the upload reads nothing
        gated.gate.set()
        info = await task
    finally:
        safety.cancel()
    assert gated.fetched == len(entries)
    assert info.size == (await store.stat(ARCHIVE)).size
    assert (await read_zip(store)).testzip() is None


async def test_cancelling_aborts_the_upload(store: ObjectStore) -> None:
    keys = await put_sources(store, [payload(MIB, seed=i) for i in range(20)])
    entries = [ArchiveEntry(f"{i}.png", k) for i, k in enumerate(keys)]
    gated = GatedUpload(store)
    task = asyncio.create_task(
        build_archive(gated, ARCHIVE, entries, part_size=PART, max_entry_bytes=MIB)
    )
    await wait_until_stalled(gated)
    task.cancel()
    gated.gate.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    await assert_no_archive(store)


def test_concurrent_archives_do_not_starve_the_default_executor(tmp_path: Path) -> None:
    """More archives at once than the loop's executor has threads still finish."""

    async def scenario() -> list[list[tuple[str, int, int]]]:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(max_workers=2))
        local = _local_store(tmp_path / "objects")
        keys = await put_sources(local, [payload(MIB, seed=i) for i in range(12)])
        entries = [ArchiveEntry(f"{i}.png", k) for i, k in enumerate(keys)]
        names = [f"archives/u-1/{n}.zip" for n in range(4)]
        builds = [
            build_archive(local, name, entries, part_size=PART, max_entry_bytes=MIB)
            for name in names
        ]
        await asyncio.wait_for(asyncio.gather(*builds), timeout=30)
        return [_entries(await read_zip(local, name)) for name in names]

    contents = asyncio.run(scenario())
    # four complete archives of the same entries (their time stamps may differ by a second)
    assert all(listing == contents[0] for listing in contents)
    assert [name for name, _, _ in contents[0]] == [f"{i}.png" for i in range(12)]
    assert all(size == MIB for _, _, size in contents[0])


def _entries(archive: zipfile.ZipFile) -> list[tuple[str, int, int]]:
    assert archive.testzip() is None
    return [(i.filename, i.CRC, i.file_size) for i in archive.infolist()]


class MemoryStore:
    """A minimal in-memory store (no threads) for an archive of many tiny entries."""

    bucket = "memory"

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    async def get_bytes(self, key: str, *, bucket: str | None = None, max_bytes: int) -> bytes:
        return self.objects[key]

    async def put_stream(
        self, key: str, stream: BinaryIO, *, content_type: str, part_size: int
    ) -> ObjectInfo:
        self.objects[key] = b"".join(iter(lambda: stream.read(part_size), b""))
        return ObjectInfo(self.bucket, key, len(self.objects[key]), content_type, "")


@pytest.mark.slow
@pytest.mark.long  # 20 s on a busy machine; a batch has at most 500 entries
async def test_more_than_65535_entries_use_zip64_records() -> None:
    memory = MemoryStore()
    memory.objects["tiny"] = b"px"
    count = 65_536 + 1
    entries = [ArchiveEntry(f"{i}.png", "tiny") for i in range(count)]
    only_what_is_used = cast("ObjectStore", memory)
    info = await build_archive(
        only_what_is_used, ARCHIVE, entries, part_size=PART, max_entry_bytes=2
    )
    raw = memory.objects[ARCHIVE]
    assert info.size == len(raw)
    assert b"PK\x06\x06" in raw[-200:]  # the ZIP64 end of central directory record
    archive = zipfile.ZipFile(io.BytesIO(raw))
    assert len(archive.infolist()) == count
    assert archive.read(f"{count - 1}.png") == b"px"


# --- memory: flat in the number of entries ---------------------------------------------------


@pytest.fixture(scope="module")
def out_of_process_s3() -> Iterator[S3Server]:
    """An S3 server in another process (its memory must not count): `S3_ENDPOINT`'s, or
    a private moto server (the session fixture's moto runs inside this process)."""
    endpoint = env("S3_ENDPOINT")
    if endpoint is not None:
        access, secret = env("S3_ACCESS_KEY") or "", env("S3_SECRET_KEY") or ""
        secure = (env("S3_SECURE") or "false").lower() in {"1", "true", "yes", "on"}
        region = env("S3_REGION") or "us-east-1"
        yield S3Server(endpoint, access, secret, region, secure, "env")
        return
    port = free_port()
    args = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not port_open("127.0.0.1", port):
            if proc.poll() is not None or time.monotonic() > deadline:
                unavailable("a private moto server did not start")
            time.sleep(0.05)
        yield S3Server(f"127.0.0.1:{port}", "testing", "testing", "us-east-1", False, "moto")
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(params=["s3", "local"])
async def memory_store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return _local_store(tmp_path / "objects")
    server: S3Server = request.getfixturevalue("out_of_process_s3")
    s3 = S3ObjectStore.from_settings(server.settings(f"lumiku-test-{unique_token('')}"))
    await s3.ensure_bucket()
    return s3


#: Parts the store itself holds while uploading: the local store copies 1 MiB at a time;
#: minio keeps up to 3 parts in flight, reads the next (part_size + 1) and slices it.
STORE_PARTS = {"LocalObjectStore": 1, "S3ObjectStore": 5}


async def test_memory_stays_flat(memory_store: ObjectStore) -> None:
    """Heap peak: the pipe, what the store holds, and one entry (twice while it is read);
    nowhere near the 80 MiB archive."""
    count, size = 40, 2 * MIB
    keys = [f"results/u-1/b-1/{i}.png" for i in range(count)]
    for i, key in enumerate(keys):
        await memory_store.put_bytes(key, payload(size, seed=i))
    entries = [ArchiveEntry(f"{i}.png", k) for i, k in enumerate(keys)]
    gc.collect()
    tracemalloc.start()
    try:
        info = await build_archive(
            memory_store, ARCHIVE, entries, part_size=PART, max_entry_bytes=size
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    log.info(
        "%s: archive %.1f MiB, Python heap peak %.1f MiB",
        type(memory_store).__name__, info.size / MIB, peak / MIB,
    )  # fmt: skip
    assert info.size > count * size
    bound = (PIPE_PARTS + STORE_PARTS[type(memory_store).__name__]) * PART + 2 * size
    assert peak < bound < info.size / 2, f"heap peak {peak / MIB:.1f} MiB"
    assert (await read_zip(memory_store)).testzip() is None


# --- the pipe itself ---------------------------------------------------------------------------


def _in_thread(target: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    results: list[object] = []

    def run() -> None:
        try:
            results.append(target())
        except BaseException as exc:
            results.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, results


def test_pipe_read_waits_for_the_full_size_until_end_of_stream() -> None:
    pipe = BytePipe(capacity=100)
    reader, got = _in_thread(lambda: pipe.read(10))
    pipe.write(b"abcd")
    reader.join(0.2)
    assert reader.is_alive()  # 4 of 10 bytes: still waiting
    pipe.write(b"efghijkl")
    reader.join(2)
    assert got == [b"abcdefghij"]
    pipe.close()
    assert [pipe.read(10), pipe.read(10)] == [b"kl", b""]


def test_pipe_write_waits_for_room() -> None:
    pipe = BytePipe(capacity=8)
    writer, done = _in_thread(lambda: pipe.write(b"0123456789abcdef"))
    writer.join(0.2)
    assert writer.is_alive()
    assert pipe.buffered == 8  # filled to capacity, no further
    assert pipe.read(5) == b"01234"
    assert pipe.read(20) == b"56789abc"  # more than the capacity: what fits, no deadlock
    assert pipe.read(0) == b""
    assert pipe.read(3) == b"def"
    writer.join(2)
    assert done == [16]


def test_pipe_failure_reaches_the_reader_and_cancel_reaches_the_writer() -> None:
    pipe = BytePipe(capacity=8)
    pipe.write(b"abc")
    pipe.fail(KeyError("boom"))
    with pytest.raises(ArchiveAborted, match="boom"):
        pipe.read(2)  # buffered bytes are dropped: the reader must not finish the upload
    other = BytePipe(capacity=8)
    writer, done = _in_thread(lambda: other.write(b"x" * 20))
    writer.join(0.2)
    other.cancel()
    writer.join(2)
    assert isinstance(done[0], StorageError)
    assert other.buffered == 0


def test_pipe_read_all() -> None:
    pipe = BytePipe(capacity=4)

    def write_then_close() -> None:
        pipe.write(b"x" * 10)
        pipe.close()

    writer, _ = _in_thread(write_then_close)
    assert pipe.read() == b"x" * 10
    writer.join(2)
