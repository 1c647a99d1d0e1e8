"""`S3ObjectStore` against a real S3 API server (MinIO, moto or `S3_ENDPOINT`)."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from minio import Minio

from lumiku_bgremover.settings import S3Settings, StorageSettings
from lumiku_bgremover.storage import (
    ObjectNotFound,
    ObjectTooLarge,
    S3ObjectStore,
    build_object_store,
)
from tests.fixtures.s3 import (
    MIB,
    S3Server,
    check_allow_listed_read,
    check_empty_object,
    check_hostile_keys,
    check_round_trip,
    check_stream,
    check_too_large,
    payload,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

pytestmark = pytest.mark.integration


@pytest.fixture
def store(s3_settings: S3Settings) -> S3ObjectStore:
    return S3ObjectStore.from_settings(s3_settings)


async def test_round_trip(store: S3ObjectStore) -> None:
    await check_round_trip(store)


async def test_empty_object(store: S3ObjectStore) -> None:
    await check_empty_object(store)


async def test_too_large(store: S3ObjectStore) -> None:
    await check_too_large(store)


async def test_hostile_keys(store: S3ObjectStore) -> None:
    await check_hostile_keys(store)


async def test_put_stream_is_a_multipart_upload(store: S3ObjectStore) -> None:
    data = await check_stream(store, size=12 * MIB + 123, part_size=5 * MIB)
    etag = (await store.stat("archives/u-1/batch.zip")).etag
    parts = [data[i : i + 5 * MIB] for i in range(0, len(data), 5 * MIB)]
    digests = b"".join(hashlib.md5(p, usedforsecurity=False).digest() for p in parts)
    assert etag == f"{hashlib.md5(digests, usedforsecurity=False).hexdigest()}-3"


async def test_allow_listed_bucket(
    make_s3_settings: Callable[..., Awaitable[S3Settings]],
) -> None:
    other = await make_s3_settings()
    reader = await make_s3_settings(allowed_buckets=(other.bucket,))
    await check_allow_listed_read(
        S3ObjectStore.from_settings(reader), S3ObjectStore.from_settings(other)
    )


class _SpyMinio(Minio):
    """Records how many bytes each GET asked for and how many the server sent."""

    requested: list[int]
    sent: list[int]

    def get_object(self, bucket_name: str, object_name: str, *args: Any, **kwargs: Any) -> Any:
        response = super().get_object(bucket_name, object_name, *args, **kwargs)
        self.requested.append(kwargs.get("length", args[1] if len(args) > 1 else 0))
        self.sent.append(int(response.headers["Content-Length"]))
        return response


async def test_too_large_reads_at_most_one_byte_more(
    store: S3ObjectStore, s3_settings: S3Settings
) -> None:
    await store.put_bytes("big.bin", payload(3 * MIB))
    spy = _SpyMinio(
        s3_settings.endpoint, s3_settings.access_key, s3_settings.secret_key,
        secure=s3_settings.secure, region=s3_settings.region,
    )  # fmt: skip
    spy.requested, spy.sent = [], []
    limited = S3ObjectStore(spy, s3_settings.bucket, region=s3_settings.region)
    with pytest.raises(ObjectTooLarge) as caught:
        await limited.get_bytes("big.bin", max_bytes=1000)
    assert caught.value.size == 3 * MIB
    assert spy.requested == [1001]
    assert spy.sent == [1001]


async def test_presigned_url_serves_the_object_over_http(
    store: S3ObjectStore, s3_server: S3Server
) -> None:
    data = payload(70_000)
    await store.put_bytes("results/u-1/b-1/i 1.png", data, "image/png")
    url = await store.presigned_get_url("results/u-1/b-1/i 1.png", ttl_s=300)
    assert "X-Amz-Signature=" in url
    async with httpx.AsyncClient() as http:
        response = await http.get(url)
        assert response.status_code == 200
        assert response.content == data
        assert response.headers["content-type"] == "image/png"
        tampered = await http.get(url.replace("X-Amz-Expires=300", "X-Amz-Expires=301"))
    if s3_server.kind == "minio-container":  # moto does not verify signatures
        assert tampered.status_code == 403


async def test_missing_bucket_is_object_not_found(s3_settings: S3Settings) -> None:
    missing = S3ObjectStore.from_settings(
        S3Settings(
            endpoint=s3_settings.endpoint, access_key=s3_settings.access_key,
            secret_key=s3_settings.secret_key, bucket="lumiku-test-never-created",
            region=s3_settings.region, secure=s3_settings.secure,
        )
    )  # fmt: skip
    with pytest.raises(ObjectNotFound):
        await missing.stat("k")
    with pytest.raises(ObjectNotFound):
        await missing.get_bytes("k", max_bytes=10)
    assert not await missing.exists("k")


async def test_build_object_store_picks_s3(s3_settings: S3Settings) -> None:
    store = build_object_store(StorageSettings(backend="s3", s3=s3_settings))
    assert isinstance(store, S3ObjectStore)
    assert store.bucket == s3_settings.bucket
    await store.put_bytes("k", b"v")
    assert await store.get_bytes("k", max_bytes=1) == b"v"
