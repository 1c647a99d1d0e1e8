"""A test's stack (NATS, PostgreSQL, S3, service environment) and its end-state checks."""

from __future__ import annotations

import contextlib
import dataclasses
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import nats
from minio import Minio

from lumiku_bgremover.contracts import subjects
from lumiku_bgremover.db import connect
from lumiku_bgremover.settings import S3Settings, Settings
from lumiku_bgremover.storage import build_object_store
from tests.fixtures.events import stored_events
from tests.integration.pipeline_harness import Client, EventLog, batch_request, photo
from tests.integration.service import service_environment, service_settings
from tests.reliability.cluster import NatsCluster
from tests.reliability.harness import NatsNode, Service, eventually

#: standard tier, 8 credits an image; 20-50 images take 5 % off.
STANDARD = 8


def standard_price(count: int) -> int:
    base = STANDARD * count
    pct = 5 if 20 <= count <= 50 else 0
    return base - base * pct // 100


@dataclass
class Stack:
    """Where everything is, for the service and for the test's client."""

    nats: NatsNode | NatsCluster
    s3: S3Settings
    database_url: str
    namespace: str
    workdir: Path

    @property
    def settings(self) -> Settings:
        """The service's settings as a client sees them: every server, the replicas."""
        settings = service_settings(self.nats.url, self.namespace, self.database_url, self.s3)
        nats_settings = dataclasses.replace(
            settings.nats, servers=self.nats.urls, stream_replicas=self.nats.replicas
        )
        return dataclasses.replace(settings, nats=nats_settings)

    def env(self, **extra: str) -> dict[str, str]:
        """The service's environment; `NATS_URL` names every server unless `extra` says."""
        env = service_environment(
            ",".join(self.nats.urls), self.namespace, self.database_url, self.s3
        )
        defaults = {"FAKE_ENGINE_DELAY_S": "0.1", "WORKER_CONCURRENCY": "2"}
        return env | defaults | {"NATS_STREAM_REPLICAS": str(self.nats.replicas)} | extra

    def service(self, name: str, **extra: str) -> Service:
        return Service(self.env(**extra), self.workdir / f"{name}.log")


@contextlib.asynccontextmanager
async def client_of(stack: Stack) -> AsyncIterator[Client]:
    """A client app that reconnects forever (it must outlive NATS outages too)."""
    settings = stack.settings
    nc = await nats.connect(
        list(stack.nats.urls), max_reconnect_attempts=-1, reconnect_time_wait=0.5, error_cb=_quiet
    )
    events = EventLog(prefix=settings.nats.subject_prefix)
    await nc.subscribe(f"{settings.nats.subject_prefix}bgremove.>", cb=events.on_message)
    await nc.flush()
    try:
        yield Client(settings, nc, build_object_store(settings.storage), events)
    finally:
        await nc.close()


async def _quiet(_error: Exception) -> None:
    return


async def submit_batch(client: Client, user: str, count: int, request_id: str) -> None:
    """Grant 1000 credits, upload `count` photos and request one standard batch."""
    await client.grant(user, 1000)
    refs = [await client.upload(user, f"p{i}.png", photo(i)) for i in range(count)]
    await client.publish(subjects.BATCH_REQUESTED, batch_request(request_id, user, refs))


async def item_states(database_url: str) -> Counter[str]:
    async with connect(database_url) as conn:
        rows = await conn.fetch("SELECT status, count(*) AS n FROM batch_items GROUP BY status")
    return Counter({r["status"]: r["n"] for r in rows})


async def wait_done_at_least(database_url: str, count: int, timeout_s: float = 60) -> None:
    async def check() -> bool:
        return (await item_states(database_url))["done"] >= count

    await eventually(check, timeout_s, f"{count} items done")


async def wait_batches_completed(database_url: str, count: int, timeout_s: float) -> None:
    """Until `count` batches were announced complete (`batch.completed` went out).

    Their rows are final before that, and every image's end event went out before it,
    so the end-state checks that follow read the whole story.
    """

    async def check() -> bool:
        async with connect(database_url) as conn:
            n = await conn.fetchval(
                "SELECT count(*) FROM batches WHERE completion_announced_at IS NOT NULL"
            )
        return int(n) >= count

    await eventually(check, timeout_s, f"{count} batches ended")


def objects_under(s3: S3Settings, prefix: str) -> list[str]:
    client = Minio(s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key,
                   secure=s3.secure, region=s3.region)  # fmt: skip
    return [o.object_name or "" for o in client.list_objects(s3.bucket, prefix, recursive=True)]


async def assert_all_done(stack: Stack, client: Client, user: str, count: int) -> None:
    """The exact end state of one fully successful batch of `count` standard images."""
    assert await item_states(stack.database_url) == Counter({"done": count})
    async with connect(stack.database_url) as conn:
        batch = await conn.fetchrow("SELECT id, status, succeeded, failed FROM batches")
    assert batch is not None
    assert (batch["status"], batch["succeeded"], batch["failed"]) == ("completed", count, 0)
    done = await stored_events(stack.settings, subjects.ITEM_DONE)
    seen = Counter(e["index"] for e in done)
    missing = sorted(set(range(count)) - set(seen))
    doubled = sorted(i for i, n in seen.items() if n > 1)
    assert (missing, doubled) == ([], []), f"item.done missing {missing}, doubled {doubled}"
    assert await stored_events(stack.settings, subjects.ITEM_FAILED) == []
    assert len(await stored_events(stack.settings, subjects.BATCH_COMPLETED)) == 1
    ledger = await client.ledger(user)
    assert await client.balance(user) == sum(e.amount for e in ledger)
    assert await client.balance(user) == 1000 - standard_price(count), "charged once, no refund"
    results = objects_under(stack.s3, f"results/{user}/{batch['id']}/")
    assert len(results) == count
    assert objects_under(stack.s3, f"archives/{user}/") == [f"archives/{user}/{batch['id']}.zip"]
