"""`LocalObjectStore`: the object-store contract on a directory, plus its own guarantees."""

from __future__ import annotations

import hashlib
import io
import tracemalloc
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from lumiku_bgremover.settings import S3Settings, StorageSettings
from lumiku_bgremover.storage import (
    InvalidKey,
    LocalObjectStore,
    ObjectStore,
    ObjectTooLarge,
    S3ObjectStore,
    StorageError,
    build_object_store,
    validate_bucket,
    validate_key,
)
from tests.fixtures.s3 import (
    HOSTILE_KEYS,
    MIB,
    check_allow_listed_read,
    check_empty_object,
    check_hostile_keys,
    check_round_trip,
    check_stream,
    check_too_large,
    payload,
)


@pytest.fixture
async def store(tmp_path: Path) -> LocalObjectStore:
    local = LocalObjectStore(tmp_path / "objects", "lumiku-test")
    await local.ensure_bucket()
    return local


def _read_file_uri(url: str) -> bytes:
    return Path(unquote(urlparse(url).path)).read_bytes()


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_is_an_object_store(store: LocalObjectStore) -> None:
    assert isinstance(store, ObjectStore)


async def test_round_trip(store: LocalObjectStore) -> None:
    await check_round_trip(store)


async def test_empty_object(store: LocalObjectStore) -> None:
    await check_empty_object(store)


async def test_too_large(store: LocalObjectStore) -> None:
    await check_too_large(store)


async def test_hostile_keys(store: LocalObjectStore) -> None:
    await check_hostile_keys(store)
    assert _files(store.root) == []


async def test_put_stream(store: LocalObjectStore) -> None:
    data = await check_stream(store, size=12 * MIB + 123, part_size=5 * MIB)
    etag = (await store.stat("archives/u-1/batch.zip")).etag
    assert etag == hashlib.md5(data, usedforsecurity=False).hexdigest()


async def test_allow_listed_bucket(tmp_path: Path) -> None:
    other = LocalObjectStore(tmp_path, "other-bucket")
    reader = LocalObjectStore(tmp_path, "own-bucket", allowed_buckets=["other-bucket"])
    await check_allow_listed_read(reader, other)


async def test_layout_and_delete_leave_no_litter(store: LocalObjectStore) -> None:
    await store.put_bytes("results/u-1/b-1/i-1.png", b"png", "image/png")
    assert (store.root / "lumiku-test/results/u-1/b-1/i-1.png").read_bytes() == b"png"
    assert _files(store.root) == [
        ".meta/lumiku-test/results/u-1/b-1/i-1.png.json",
        "lumiku-test/results/u-1/b-1/i-1.png",
    ]
    await store.delete("results/u-1/b-1/i-1.png")
    assert _files(store.root) == []
    assert sorted(p.name for p in store.root.iterdir()) == [".meta", "lumiku-test"]
    assert list((store.root / "lumiku-test").iterdir()) == []


class _Broken(io.RawIOBase):
    """Yields some bytes, then fails like a dropped upstream connection."""

    def __init__(self) -> None:
        self._sent = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._sent:
            raise ConnectionResetError("upstream went away")
        self._sent = True
        buffer[:4] = b"half"
        return 4


async def test_failed_write_keeps_the_old_object_and_no_temp_file(
    store: LocalObjectStore,
) -> None:
    await store.put_bytes("a.zip", b"old", "application/zip")
    before = _files(store.root)
    with pytest.raises(StorageError, match="upstream went away"):
        await store.put_stream(
            "a.zip", io.BufferedReader(_Broken()), content_type="x/y", part_size=5 * MIB
        )
    assert _files(store.root) == before
    assert await store.get_bytes("a.zip", max_bytes=10) == b"old"
    assert (await store.stat("a.zip")).content_type == "application/zip"


async def test_too_large_reads_at_most_one_byte_more(store: LocalObjectStore) -> None:
    path = store.root / "lumiku-test/huge.bin"
    with path.open("wb") as f:
        f.truncate(256 * MIB)  # sparse: no disk used
    tracemalloc.start()
    try:
        with pytest.raises(ObjectTooLarge) as caught:
            await store.get_bytes("huge.bin", max_bytes=1000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.size == 256 * MIB
    assert peak < 4 * MIB


async def test_stat_without_sidecar_falls_back(store: LocalObjectStore) -> None:
    (store.root / "lumiku-test/dropped-in.bin").write_bytes(b"abc")
    info = await store.stat("dropped-in.bin")
    assert info.content_type == "application/octet-stream"
    assert info.etag == hashlib.md5(b"abc", usedforsecurity=False).hexdigest()
    assert info.size == 3


async def test_presigned_url_is_a_file_uri(store: LocalObjectStore) -> None:
    await store.put_bytes("results/u-1/a b.png", b"bytes")
    url = await store.presigned_get_url("results/u-1/a b.png", ttl_s=60)
    assert url.startswith("file:///")
    assert _read_file_uri(url) == b"bytes"
    for bad_ttl in (0, 8 * 24 * 3600):
        with pytest.raises(ValueError, match="ttl_s"):
            await store.presigned_get_url("results/u-1/a b.png", ttl_s=bad_ttl)


async def test_symlink_out_of_the_bucket_is_refused(
    store: LocalObjectStore, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    (store.root / "lumiku-test/link").symlink_to(outside)
    with pytest.raises(InvalidKey, match="escapes"):
        await store.get_bytes("link/secret", max_bytes=100)
    with pytest.raises(InvalidKey, match="escapes"):
        await store.put_bytes("link/new", b"x")
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]


async def test_key_that_is_also_a_directory_is_a_storage_error(
    store: LocalObjectStore,
) -> None:
    await store.put_bytes("a", b"file")
    with pytest.raises(StorageError):
        await store.put_bytes("a/b", b"nested")
    assert await store.get_bytes("a", max_bytes=10) == b"file"


@pytest.mark.parametrize("key", [*HOSTILE_KEYS, "a/", "./a", "a/.."])
def test_validate_key_refuses(key: str) -> None:
    with pytest.raises(InvalidKey):
        validate_key(key)


@pytest.mark.parametrize(
    "key", ["a", "originals/u-1/photo.png", "a..b/c", ".hidden", "é/日本.png", "x" * 1024]
)
def test_validate_key_accepts(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize("bucket", ["ab", "A-bucket", "-abc", "abc-", "a..b", "a_b", "x" * 64])
def test_validate_bucket_refuses(bucket: str) -> None:
    with pytest.raises(InvalidKey):
        validate_bucket(bucket)


@pytest.mark.parametrize("bucket", ["abc", "lumiku-bgremover", "a.b-c1", "x" * 63])
def test_validate_bucket_accepts(bucket: str) -> None:
    assert validate_bucket(bucket) == bucket


def test_build_object_store_local(tmp_path: Path) -> None:
    s3 = S3Settings(endpoint="h:1", access_key="a", secret_key="s", bucket="my-bucket")
    built = build_object_store(StorageSettings(backend="local", local_dir=tmp_path, s3=s3))
    assert isinstance(built, LocalObjectStore)
    assert (built.root, built.bucket) == (tmp_path.resolve(), "my-bucket")
    plain = build_object_store(StorageSettings(backend="local", local_dir=tmp_path))
    assert plain.bucket == "lumiku-bgremover"


def test_build_object_store_s3_without_network() -> None:
    s3 = S3Settings(endpoint="127.0.0.1:1", access_key="a", secret_key="s", bucket="my-bucket")
    built = build_object_store(StorageSettings(backend="s3", s3=s3))
    assert isinstance(built, S3ObjectStore)
    assert built.bucket == "my-bucket"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (StorageSettings(backend="s3"), "needs S3 settings"),
        (StorageSettings(backend="local"), "needs a local directory"),
        (StorageSettings(backend="ftp"), "unknown storage backend 'ftp'"),
    ],
)
def test_build_object_store_refuses_incomplete_settings(
    settings: StorageSettings, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        build_object_store(settings)


async def test_put_stream_accepts_a_plain_binary_file(
    store: LocalObjectStore, tmp_path: Path
) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(payload(3 * MIB + 5))
    with src.open("rb") as f:
        info = await store.put_stream("copy.bin", f, content_type="a/b", part_size=5 * MIB)
    assert info.size == 3 * MIB + 5
    assert await store.get_bytes("copy.bin", max_bytes=info.size) == src.read_bytes()


async def test_a_huge_limit_does_not_reserve_memory(store: LocalObjectStore) -> None:
    await store.put_bytes("originals/u/small.png", b"tiny", "image/png")
    # read(limit) would try to reserve 1 TiB first and fail with MemoryError
    assert await store.get_bytes("originals/u/small.png", max_bytes=1 << 40) == b"tiny"
