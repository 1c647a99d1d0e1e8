"""Fairness between users, and a worker killed in the middle of a batch."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from lumiku_bgremover.contracts import subjects
from lumiku_bgremover.contracts.common import Tier
from lumiku_bgremover.settings import S3Settings, Settings
from tests.fixtures.events import stored_events
from tests.integration.pipeline_harness import (
    Client,
    batch_request,
    client_for,
    photo,
    service_and_client,
    with_fake_engine,
)
from tests.integration.service import service_environment, service_process, service_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(
    nats_url: str, nats_namespace: str, migrated_database_url: str, s3_settings: S3Settings
) -> Settings:
    return service_settings(nats_url, nats_namespace, migrated_database_url, s3_settings)


async def test_a_single_image_does_not_wait_behind_a_bulk_batch(settings: Settings) -> None:
    slow = with_fake_engine(settings, delay_s=0.05, worker_concurrency=2)
    async with service_and_client(slow) as client:
        await client.grant("alice", 10_000)
        await client.grant("bob", 100)
        ref = await client.upload("alice", "a.png", photo(0))
        bulk = batch_request("bulk-200", "alice", [ref] * 200, tier=Tier.BASIC)
        await client.publish(subjects.BATCH_REQUESTED, bulk)
        await client.events.wait(lambda log: bool(log.of(subjects.BATCH_ACCEPTED)), 30)

        single_ref = await client.upload("bob", "b.png", photo(1))
        single = {"request_id": "bob-1", "user_id": "bob", "tier": "basic",
                  "image": {"filename": "b.png", "ref": single_ref}}  # fmt: skip
        await client.publish(subjects.IMAGE_REQUESTED, single)
        await client.events.wait(
            lambda log: any(e["user_id"] == "bob" for e in log.of(subjects.ITEM_DONE)), 60
        )
        done = client.events.of(subjects.ITEM_DONE)
        alice_before_bob = sum(1 for e in done if e["user_id"] == "alice")
        assert alice_before_bob <= 50, f"{alice_before_bob} of alice's items went first"
        await client.events.wait(lambda log: len(log.of(subjects.BATCH_COMPLETED)) == 2, 120)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Client]:
    async with client_for(settings) as c:
        yield c


async def test_a_killed_worker_leaves_nothing_undone_or_done_twice(
    settings: Settings, client: Client, nats_namespace: str, migrated_database_url: str,
    s3_settings: S3Settings, tmp_path: Path,
) -> None:  # fmt: skip
    env = service_environment(settings.nats.servers[0], nats_namespace, migrated_database_url,
                              s3_settings)  # fmt: skip
    env |= {"FAKE_ENGINE_DELAY_S": "0.2", "WORKER_CONCURRENCY": "2", "WORK_ACK_WAIT_S": "3"}
    await client.grant("kim", 1000)
    refs = [await client.upload("kim", f"p{i}.png", photo(i)) for i in range(30)]

    with service_process(env, tmp_path / "first.log") as first:
        await client.publish(subjects.BATCH_REQUESTED, batch_request("kill-30", "kim", refs))
        await client.events.wait(lambda log: len(log.of(subjects.ITEM_DONE)) >= 8, 60)
        first.kill()  # SIGKILL: no goodbye, items in flight stay unacked
        first.wait(10)
    assert len(client.events.of(subjects.ITEM_DONE)) < 30

    with service_process(env, tmp_path / "second.log"):
        await client.events.wait(lambda log: bool(log.of(subjects.BATCH_COMPLETED)), 120)
        await asyncio.sleep(1.0)  # time for any duplicate to show up

    conn = await asyncpg.connect(migrated_database_url)
    try:
        statuses = await conn.fetch("SELECT status, count(*) FROM batch_items GROUP BY status")
        batch = await conn.fetchrow("SELECT status, succeeded, failed FROM batches")
    finally:
        await conn.close()
    assert {r["status"]: r["count"] for r in statuses} == {"done": 30}
    assert batch is not None
    assert (batch["status"], batch["succeeded"], batch["failed"]) == ("completed", 30, 0)

    completed = await stored_events(settings, subjects.BATCH_COMPLETED)
    assert len(completed) == 1
    done = await stored_events(settings, subjects.ITEM_DONE)
    assert sorted(e["index"] for e in done) == list(range(30))  # each item once
    assert await client.balance("kim") == 1000 - 228  # standard x 30 = 240 - 5 %, no refund
