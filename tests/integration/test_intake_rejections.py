"""Every refusal publishes `bgremove.request.rejected` with its code and charges nothing."""

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from lumiku_bgremover.contracts import subjects
from lumiku_bgremover.contracts.common import Tier
from lumiku_bgremover.settings import S3Settings
from tests.integration.pipeline_harness import (
    Client,
    batch_request,
    photo,
    service_and_client,
    with_fake_engine,
)
from tests.integration.service import service_settings

pytestmark = pytest.mark.integration

USER = "rita"
GRANTED = 50


@pytest.fixture
async def client(
    nats_url: str, nats_namespace: str, migrated_database_url: str, s3_settings: S3Settings
) -> AsyncIterator[Client]:
    settings = service_settings(nats_url, nats_namespace, migrated_database_url, s3_settings)
    limited = with_fake_engine(
        settings, max_images=20, max_image_bytes=60_000, max_batch_bytes=100_000
    )
    async with service_and_client(limited) as c:
        await c.grant(USER, GRANTED)
        yield c


async def rejected(client: Client, body: dict[str, Any] | bytes) -> dict[str, Any]:
    """Publish `body` as a batch request; the one rejection it caused."""
    await client.publish(subjects.BATCH_REQUESTED, body)
    await client.events.wait(lambda log: bool(log.of(subjects.REQUEST_REJECTED)), 20)
    [event] = client.events.of(subjects.REQUEST_REJECTED)
    return event


async def assert_nothing_charged(client: Client) -> None:
    assert client.events.of(subjects.BATCH_ACCEPTED) == []
    assert [e.reason for e in await client.ledger(USER)] == ["grant"]
    assert await client.balance(USER) == GRANTED
    conn = await asyncpg.connect(client.settings.require_database().url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM batches") == 0
    finally:
        await conn.close()


async def test_malformed_json(client: Client) -> None:
    event = await rejected(client, b'{"request_id": "r1", "user_id": ')
    assert event["code"] == "invalid_request"
    await assert_nothing_charged(client)


async def test_wrong_schema_names_the_path(client: Client) -> None:
    ref = await client.upload(USER, "a.png", photo(0))
    body = batch_request("r-schema", USER, [ref])
    body["images"][0]["ref"]["url"] = "https://example.com/a.png"  # both a key and a url
    event = await rejected(client, body)
    assert (event["code"], event["request_id"], event["user_id"]) == (
        "invalid_request", "r-schema", USER,
    )  # fmt: skip
    assert event["path"].startswith("$.images[0].ref")
    assert event["correlation"] == {"app": "web", "ref": "ui-r-schema"}
    await assert_nothing_charged(client)


async def test_unknown_tier(client: Client) -> None:
    ref = await client.upload(USER, "a.png", photo(0))
    body = batch_request("r-tier", USER, [ref])
    body["tier"] = "platinum"
    event = await rejected(client, body)
    assert (event["code"], event["path"]) == ("unknown_tier", "$.tier")
    await assert_nothing_charged(client)


async def test_too_many_images_for_the_contract(client: Client) -> None:
    ref = await client.upload(USER, "a.png", photo(0))
    event = await rejected(client, batch_request("r-501", USER, [ref] * 501))
    assert event["code"] == "too_many_images"
    await assert_nothing_charged(client)


async def test_too_many_images_for_the_configured_limit(client: Client) -> None:
    ref = await client.upload(USER, "a.png", photo(0))
    event = await rejected(client, batch_request("r-21", USER, [ref] * 21))
    assert event["code"] == "too_many_images"
    await assert_nothing_charged(client)


async def test_a_request_whose_only_image_is_too_large_by_its_real_size(client: Client) -> None:
    big = await client.upload(USER, "big.png", b"\x89PNG" + bytes(70_000))
    event = await rejected(client, batch_request("r-big", USER, [big, big]))
    assert (event["code"], event["path"]) == ("no_runnable_images", "$.images")
    assert "$.images[1]: source_too_large" in event["message"]
    await assert_nothing_charged(client)


async def test_a_declared_size_over_the_limit(client: Client) -> None:
    ref = await client.upload(USER, "a.png", photo(0))
    body = batch_request("r-declared", USER, [ref])
    body["images"][0]["size_bytes"] = 80_000
    event = await rejected(client, body)
    assert (event["code"], event["path"]) == ("image_too_large", "$.images[0].size_bytes")
    await assert_nothing_charged(client)


async def test_a_batch_larger_than_the_limit(client: Client) -> None:
    ref = await client.upload(USER, "mid.png", b"\x89PNG" + bytes(40_000))
    event = await rejected(client, batch_request("r-batch", USER, [ref] * 3))
    assert (event["code"], event["path"]) == ("batch_too_large", "$.images")
    await assert_nothing_charged(client)


async def test_insufficient_credits(client: Client) -> None:
    refs = [await client.upload(USER, f"p{i}.png", photo(i)) for i in range(4)]
    event = await rejected(client, batch_request("r-poor", USER, refs, tier=Tier.INDUSTRY))
    assert event["code"] == "insufficient_credits"
    assert "100" in event["message"]  # 4 x 25 required, 50 held
    await assert_nothing_charged(client)


@pytest.mark.parametrize(
    "ref",
    [
        {"bucket": "SELF", "key": "originals/someone-else/a.png"},
        {"bucket": "SELF", "key": "results/rita/x/a.png"},
        {"bucket": "another-bucket", "key": "originals/rita/a.png"},
        {"url": "https://127.0.0.1/a.png"},
        {"url": "https://169.254.169.254/latest/meta-data"},
        {"url": "https://10.1.2.3/a.png"},
    ],
)
async def test_forbidden_sources(client: Client, ref: dict[str, str]) -> None:
    if ref.get("bucket") == "SELF":
        ref = {**ref, "bucket": client.store.bucket}
        await client.store.put_bytes(ref["key"], photo(0), "image/png")
    event = await rejected(client, batch_request("r-forbidden", USER, [ref]))
    assert event["code"] == "forbidden_source"
    assert event["path"] == "$.images[0].ref"
    await assert_nothing_charged(client)


async def test_a_request_whose_only_object_is_missing(client: Client) -> None:
    ref = {"bucket": client.store.bucket, "key": f"originals/{USER}/nowhere.png"}
    event = await rejected(client, batch_request("r-missing", USER, [ref]))
    assert (event["code"], event["path"]) == ("no_runnable_images", "$.images")
    await assert_nothing_charged(client)


async def test_a_request_id_of_another_user(client: Client) -> None:
    ref = await client.upload(USER, "a.png", photo(0))
    await client.publish(subjects.BATCH_REQUESTED, batch_request("r-shared", USER, [ref]))
    await client.events.wait(lambda log: bool(log.of(subjects.BATCH_COMPLETED)), 30)
    await client.grant("sam", 50)
    other = await client.upload("sam", "b.png", photo(1))
    event = await rejected(client, batch_request("r-shared", "sam", [other]))
    assert (event["code"], event["user_id"]) == ("invalid_request", "sam")
    assert [e.reason for e in await client.ledger("sam")] == ["grant"]


async def test_the_consumer_keeps_going_after_bad_input(client: Client) -> None:
    await client.publish(subjects.BATCH_REQUESTED, b"\xff\xfe not json")
    await client.publish(subjects.BATCH_REQUESTED, b"[]")
    ref = await client.upload(USER, "a.png", photo(0))
    await client.publish(subjects.BATCH_REQUESTED, batch_request("r-good", USER, [ref]))
    await client.events.wait(lambda log: bool(log.of(subjects.BATCH_COMPLETED)), 30)
    assert [e["code"] for e in client.events.of(subjects.REQUEST_REJECTED)] == [
        "invalid_request", "invalid_request",
    ]  # fmt: skip
