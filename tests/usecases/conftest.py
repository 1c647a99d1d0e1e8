"""The pipeline's use cases wired on in-memory fakes of the bus (publisher, work queue), a
local object store and the fake engine, over a real PostgreSQL (no NATS, no S3)."""

import dataclasses
import io
from collections.abc import AsyncIterator
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import pytest
import pytest_asyncio
from PIL import Image

from lumiku_bgremover import billing
from lumiku_bgremover.engines.fake import FakeEngine
from lumiku_bgremover.engines.router import build_router
from lumiku_bgremover.observability.recorder import InMemoryMetrics
from lumiku_bgremover.pipeline.announce import Announcer
from lumiku_bgremover.pipeline.completion import Finalizer
from lumiku_bgremover.pipeline.events import InMemoryPublisher
from lumiku_bgremover.pipeline.intake import Intake
from lumiku_bgremover.pipeline.processor import ItemProcessor
from lumiku_bgremover.queue import Delivery, InMemoryWorkQueue
from lumiku_bgremover.settings import EngineSettings, Limits
from lumiku_bgremover.sources import SourceLoader, UrlFetcher
from lumiku_bgremover.storage.local import LocalObjectStore
from tests.integration.service import FAKE_ROUTES, pinned_clock

pytestmark = pytest.mark.integration

BUCKET = "lumiku-bgremover"
LIMITS = Limits(max_image_bytes=64 * 1024)


def png(size: tuple[int, int] = (24, 16), colour: tuple[int, int, int] = (200, 30, 40)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="PNG")
    return out.getvalue()


@dataclasses.dataclass
class Wired:
    """The use cases and the fakes they talk to."""

    pool: asyncpg.Pool
    store: LocalObjectStore
    events: InMemoryPublisher
    queue: InMemoryWorkQueue
    intake: Intake
    finalizer: Finalizer
    processor: ItemProcessor
    announcer: Announcer
    metrics: InMemoryMetrics

    async def upload(self, user: str, name: str, data: bytes) -> dict[str, str]:
        key = f"originals/{user}/{name}"
        await self.store.put_bytes(key, data, "image/png")
        return {"bucket": BUCKET, "key": key}

    async def grant(self, user: str, amount: int) -> None:
        async with self.pool.acquire() as conn:
            await billing.grant(conn, user, amount, idempotency_key=f"grant:{user}:{amount}")

    async def balance(self, user: str) -> int:
        async with self.pool.acquire() as conn:
            return await billing.balance(conn, user)

    async def ledger(self, user: str) -> list[tuple[str, int]]:
        async with self.pool.acquire() as conn:
            return [(e.reason, e.amount) for e in await billing.ledger_entries(conn, user)]

    async def work_all(self, *, last: bool = False) -> None:
        """Process every queued item once, in order (the queue is drained)."""
        items, self.queue.items = self.queue.items, []
        for item in items:
            await self.processor.process(Delivery(item, attempt=1, last=last, stream_seq=0))


def wire(
    pool: asyncpg.Pool, root: Path, *, engine: FakeEngine | None = None,
    events: InMemoryPublisher | None = None,
) -> Wired:  # fmt: skip
    clock = pinned_clock()
    metrics = InMemoryMetrics()
    store = LocalObjectStore(root, BUCKET)
    loader = SourceLoader(store, UrlFetcher(), max_bytes=LIMITS.max_image_bytes)
    events = events or InMemoryPublisher()
    queue = InMemoryWorkQueue()
    announcer = Announcer(events, clock=clock)
    router = build_router(EngineSettings(routes=dict(FAKE_ROUTES)), fake=engine or FakeEngine())
    finalizer = Finalizer(pool, store, events, clock=clock, presign_ttl_s=600,
                          max_entry_bytes=LIMITS.max_image_bytes, metrics=metrics)  # fmt: skip
    processor = ItemProcessor(
        pool, store, loader, router, events=events, finalizer=finalizer, clock=clock,
        max_pixels=LIMITS.max_image_pixels, presign_ttl_s=600, metrics=metrics,
    )  # fmt: skip
    intake = Intake(pool, loader, announcer, queue, limits=LIMITS, clock=clock,
                    timezone=ZoneInfo("Asia/Jakarta"), metrics=metrics)  # fmt: skip
    return Wired(pool, store, events, queue, intake, finalizer, processor, announcer, metrics)


@pytest_asyncio.fixture
async def wired(db_pool: asyncpg.Pool, tmp_path: Path) -> AsyncIterator[Wired]:
    yield wire(db_pool, tmp_path)
