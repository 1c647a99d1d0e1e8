"""The batch pipeline end to end on real NATS JetStream, PostgreSQL and an S3 API server."""

import dataclasses
import io
import zipfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from PIL import Image

from lumiku_bgremover import billing
from lumiku_bgremover.contracts import subjects
from lumiku_bgremover.contracts.common import Plan, Tier
from lumiku_bgremover.db import connect
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


@pytest.fixture
async def client(
    nats_url: str, nats_namespace: str, migrated_database_url: str, s3_settings: S3Settings
) -> AsyncIterator[Client]:
    settings = service_settings(nats_url, nats_namespace, migrated_database_url, s3_settings)
    async with service_and_client(with_fake_engine(settings, worker_concurrency=4)) as c:
        yield c


def completed(batch_id: str | None = None) -> object:
    def check(log: object) -> bool:
        return any(
            batch_id is None or e["batch_id"] == batch_id
            for e in log.of(subjects.BATCH_COMPLETED)  # type: ignore[attr-defined]
        )

    return check


async def test_a_batch_with_undecodable_images(client: Client) -> None:
    user = "alice"
    await client.grant(user, 1000)
    refs = []
    broken = {4, 11, 19}
    for i in range(25):
        data = b"this is not an image" if i in broken else photo(i, (96 + i, 64))
        refs.append(await client.upload(user, f"p{i}.png", data))
    await client.publish(subjects.BATCH_REQUESTED, batch_request("req-25", user, refs))

    await client.events.wait(completed(), 90)

    done = client.events.of(subjects.ITEM_DONE)
    failed = client.events.of(subjects.ITEM_FAILED)
    [accepted] = client.events.of(subjects.BATCH_ACCEPTED)
    [finished] = client.events.of(subjects.BATCH_COMPLETED)
    assert len(done) == 22
    assert sorted(e["index"] for e in failed) == sorted(broken)
    assert {e["code"] for e in failed} == {"decode_failed"}
    assert accepted["credits_charged"] == 190  # standard x 25 = 200 - 5 %
    assert finished["status"] == "partial"
    assert (finished["succeeded"], finished["failed"], finished["cancelled"]) == (22, 3, 0)
    # 22 images at 5 % off cost 176 - 8 = 168, so 22 of the 190 come back
    assert (finished["credits_charged"], finished["credits_refunded"]) == (190, 22)
    assert finished["correlation"] == {"app": "web", "ref": "ui-req-25"}
    assert all(e["correlation"] == {"app": "web", "ref": "ui-req-25"} for e in done + failed)

    ledger = sorted((e.reason, e.amount) for e in await client.ledger(user))
    assert ledger == [("batch_charge", -190), ("grant", 1000), ("refund", 22)]
    assert await client.balance(user) == 1000 - 168

    archive = await client.store.get_bytes(finished["archive"]["key"], max_bytes=50_000_000)
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        assert zf.testzip() is None
        names = zf.namelist()
        assert len(names) == 22
        assert sorted(names) == sorted(f"photo-{i}.png" for i in range(25) if i not in broken)

    async with httpx.AsyncClient() as http:
        for event in done:
            response = await http.get(event["url"])
            assert response.status_code == 200
            image = Image.open(io.BytesIO(response.content))
            assert image.format == "PNG"
            assert image.mode == "RGBA"
            assert image.size == (96 + event["index"], 64)
            assert (event["width"], event["height"]) == image.size


async def test_the_same_request_three_times_is_one_batch_and_one_charge(client: Client) -> None:
    user = "bob"
    await client.grant(user, 100)
    refs = [await client.upload(user, f"p{i}.png", photo(i)) for i in range(3)]
    body = batch_request("req-dup", user, refs, tier=Tier.BASIC)
    for _ in range(3):
        await client.publish(subjects.BATCH_REQUESTED, body)
    await client.events.wait(completed(), 60)
    await client.events.wait(lambda log: len(log.of(subjects.BATCH_ACCEPTED)) >= 1, 10)

    assert len(client.events.of(subjects.ITEM_DONE)) == 3
    assert len(client.events.of(subjects.BATCH_COMPLETED)) == 1
    assert len({e["batch_id"] for e in client.events.of(subjects.BATCH_ACCEPTED)}) == 1
    charges = [e for e in await client.ledger(user) if e.reason == "batch_charge"]
    assert [e.amount for e in charges] == [-9]
    assert await client.balance(user) == 91


async def test_a_single_image_is_paid_and_processed(client: Client) -> None:
    user = "carol"
    await client.grant(user, 30)
    ref = await client.upload(user, "one.png", photo(2))
    body = {
        "request_id": "single-1",
        "user_id": user,
        "tier": "industry",
        "image": {"filename": "one.png", "ref": ref},
        "options": {"format": "webp"},
    }
    await client.publish(subjects.IMAGE_REQUESTED, body)
    await client.events.wait(completed(), 60)
    [done] = client.events.of(subjects.ITEM_DONE)
    assert done["content_type"] == "image/webp"
    [accepted] = client.events.of(subjects.BATCH_ACCEPTED)
    assert (accepted["mode"], accepted["credits_charged"], accepted["lane"]) == (
        "single",
        25,
        "interactive",
    )
    assert await client.balance(user) == 5


async def test_status_is_answered_for_the_owner_only(client: Client) -> None:
    user = "dave"
    await client.grant(user, 100)
    refs = [await client.upload(user, f"p{i}.png", photo(i)) for i in range(2)]
    await client.publish(subjects.BATCH_REQUESTED, batch_request("req-status", user, refs))
    await client.events.wait(completed(), 60)
    [finished] = client.events.of(subjects.BATCH_COMPLETED)

    mine = await client.request(
        subjects.BATCH_STATUS, {"user_id": user, "batch_id": finished["batch_id"]}
    )
    assert (mine["status"], mine["batch_status"], mine["succeeded"]) == ("ok", "completed", 2)
    assert mine["archive_url"]
    theirs = await client.request(
        subjects.BATCH_STATUS, {"user_id": "mallory", "batch_id": finished["batch_id"]}
    )
    assert (theirs["status"], theirs["code"]) == ("error", "not_found")


@pytest.fixture
async def slow_client(
    nats_url: str, nats_namespace: str, migrated_database_url: str, s3_settings: S3Settings
) -> AsyncIterator[Client]:
    settings = service_settings(nats_url, nats_namespace, migrated_database_url, s3_settings)
    async with service_and_client(
        with_fake_engine(settings, delay_s=0.2, worker_concurrency=1)
    ) as c:
        yield c


async def test_cancel_stops_pending_items_and_refunds_them(slow_client: Client) -> None:
    client, user = slow_client, "erin"
    await client.grant(user, 1000)
    ref = await client.upload(user, "a.png", photo(0))
    await client.publish(subjects.BATCH_REQUESTED, batch_request("req-cancel", user, [ref] * 20))
    await client.events.wait(lambda log: len(log.of(subjects.ITEM_DONE)) >= 2, 30)
    [accepted] = client.events.of(subjects.BATCH_ACCEPTED)
    cancel = {"batch_id": accepted["batch_id"], "user_id": user}
    await client.publish(subjects.BATCH_CANCEL, {**cancel, "user_id": "mallory"})  # refused
    await client.publish(subjects.BATCH_CANCEL, cancel)
    await client.events.wait(completed(), 60)
    [refused] = client.events.of(subjects.REQUEST_REJECTED)
    assert (refused["code"], refused["user_id"], refused["batch_id"]) == (
        "not_found", "mallory", accepted["batch_id"])  # fmt: skip
    assert any(e["cancelled"] >= 10 for e in client.events.of(subjects.BATCH_PROGRESS))

    [finished] = client.events.of(subjects.BATCH_COMPLETED)
    ok, cancelled = finished["succeeded"], finished["cancelled"]
    assert ok >= 2
    assert cancelled >= 10
    assert ok + cancelled == 20
    stopped = client.events.of(subjects.ITEM_FAILED)  # every image's end, cancelled too
    assert len(stopped) == cancelled
    assert {e["code"] for e in stopped} == {"cancelled"}
    ends = {e["index"] for e in stopped} | {
        e["index"] for e in client.events.of(subjects.ITEM_DONE)
    }
    assert ends == set(range(20))
    assert finished["status"] == "partial"
    # 20 x 8 = 160 - 5 % = 152 charged; the successes cost their share at 5 % off
    kept = ok * 8 - ok * 8 * 5 // 100
    assert finished["credits_refunded"] == 152 - kept
    assert await client.balance(user) == 1000 - kept
    archive = await client.store.get_bytes(finished["archive"]["key"], max_bytes=10_000_000)
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        assert len(zf.namelist()) == ok


async def test_items_failing_every_attempt_are_refunded_in_full(
    nats_url: str, nats_namespace: str, migrated_database_url: str, s3_settings: S3Settings
) -> None:
    settings = service_settings(nats_url, nats_namespace, migrated_database_url, s3_settings)
    failing = with_fake_engine(settings, max_deliver=2)
    failing = dataclasses.replace(
        failing, engines=dataclasses.replace(failing.engines, fake_failure_rate=1.0)
    )
    async with service_and_client(failing) as client:
        await client.grant("fay", 100)
        refs = [await client.upload("fay", f"p{i}.png", photo(i)) for i in range(3)]
        await client.publish(subjects.BATCH_REQUESTED, batch_request("req-fail", "fay", refs))
        await client.events.wait(completed(), 60)
        [finished] = client.events.of(subjects.BATCH_COMPLETED)
        assert (finished["status"], finished["failed"], finished["archive"]) == ("failed", 3, None)
        assert finished["credits_refunded"] == finished["credits_charged"] == 24
        assert {e["code"] for e in client.events.of(subjects.ITEM_FAILED)} == {"engine_failed"}
        assert await client.balance("fay") == 100
        progress = client.events.of(subjects.BATCH_PROGRESS)
        assert progress
        assert progress[-1]["failed"] == 3


async def test_a_failed_single_image_gives_back_its_quota_or_its_credits(client: Client) -> None:
    db_url = client.settings.require_database().url
    async with connect(db_url) as conn:
        expires = datetime.now(UTC) + timedelta(days=30)
        await billing.set_subscription(conn, "gina", Plan.STARTER, expires_at=expires)
    await client.grant("gina", 50)
    broken = await client.upload("gina", "broken.png", b"GIF89a but not really")

    def single(request_id: str, tier: str) -> dict[str, object]:
        return {"request_id": request_id, "user_id": "gina", "tier": tier,
                "image": {"filename": "broken.png", "ref": broken}}  # fmt: skip

    await client.publish(subjects.IMAGE_REQUESTED, single("gina-quota", "basic"))
    await client.publish(subjects.IMAGE_REQUESTED, single("gina-credits", "industry"))
    await client.events.wait(lambda log: len(log.of(subjects.BATCH_COMPLETED)) == 2, 60)

    by_request = {e["request_id"]: e for e in client.events.of(subjects.BATCH_COMPLETED)}
    assert by_request["gina-quota"]["credits_charged"] == 0
    assert by_request["gina-credits"]["credits_refunded"] == 25
    failed = {e["batch_id"]: e for e in client.events.of(subjects.ITEM_FAILED)}
    assert failed[by_request["gina-credits"]["batch_id"]]["credits_refunded"] == 25
    assert await client.balance("gina") == 50
    async with connect(db_url) as conn:
        used = await conn.fetchval("SELECT coalesce(sum(used), 0) FROM daily_usage")
        released = await conn.fetchval(
            "SELECT count(*) FROM quota_consumptions WHERE released_at IS NOT NULL"
        )
    assert (used, released) == (0, 1)
