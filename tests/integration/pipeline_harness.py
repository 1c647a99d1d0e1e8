"""A running service plus a client app's view of it, for end-to-end pipeline tests."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import nats
import nats.aio.client
from nats.aio.msg import Msg
from PIL import Image

from lumiku_bgremover import billing
from lumiku_bgremover.contracts import subjects
from lumiku_bgremover.contracts.common import Tier
from lumiku_bgremover.db import connect
from lumiku_bgremover.settings import EngineSettings, Settings
from lumiku_bgremover.storage import ObjectStore, build_object_store
from tests.integration.service import FAKE_ROUTES, running_app


def with_fake_engine(settings: Settings, *, delay_s: float = 0.0, **limits: Any) -> Settings:
    """`settings` routed to the fake engine (and with other limits, if given)."""
    engines = EngineSettings(routes=dict(FAKE_ROUTES), fake_delay_s=delay_s)
    return dataclasses.replace(
        settings, engines=engines, limits=dataclasses.replace(settings.limits, **limits)
    )


def photo(index: int, size: tuple[int, int] = (96, 64)) -> bytes:
    """A small real photo (scikit-image's samples) as PNG bytes, varied by index."""
    from skimage import data  # noqa: PLC0415 - heavy, only the pipeline tests need it

    samples = (data.astronaut, data.coffee, data.chelsea, data.rocket)
    image = Image.fromarray(samples[index % len(samples)]()).convert("RGB")
    image = image.resize(size).rotate(index * 7, expand=False)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@dataclasses.dataclass
class EventLog:
    """Every event the service publishes under the namespace, as decoded JSON."""

    prefix: str
    seen: list[tuple[str, dict[str, Any], dict[str, str]]] = dataclasses.field(default_factory=list)
    changed: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    async def on_message(self, msg: Msg) -> None:
        subject = msg.subject.removeprefix(self.prefix)
        self.seen.append((subject, msgspec.json.decode(msg.data), dict(msg.headers or {})))
        self.changed.set()

    def of(self, subject: str) -> list[dict[str, Any]]:
        """Bodies of the events on one base subject, in arrival order."""
        return [body for s, body, _ in self.seen if s == subject]

    async def wait(self, predicate: Callable[[EventLog], bool], timeout_s: float = 60.0) -> None:
        """Until `predicate(self)` holds; TimeoutError after `timeout_s`."""
        async with asyncio.timeout(timeout_s):
            while not predicate(self):
                self.changed.clear()
                await self.changed.wait()


@dataclasses.dataclass
class Client:
    """What another Lumiku app does: upload, publish, listen; plus operator helpers."""

    settings: Settings
    nc: nats.aio.client.Client
    store: ObjectStore
    events: EventLog

    async def grant(self, user: str, amount: int) -> None:
        async with connect(self.settings.require_database().url) as conn:
            await billing.grant(conn, user, amount, idempotency_key=f"grant:{uuid.uuid4()}")

    async def balance(self, user: str) -> int:
        async with connect(self.settings.require_database().url) as conn:
            return await billing.balance(conn, user)

    async def ledger(self, user: str) -> list[billing.LedgerEntry]:
        async with connect(self.settings.require_database().url) as conn:
            return await billing.ledger_entries(conn, user)

    async def upload(self, user: str, name: str, data: bytes) -> dict[str, str]:
        key = f"originals/{user}/{name}"
        await self.store.put_bytes(key, data, "application/octet-stream")
        return {"bucket": self.store.bucket, "key": key}

    async def publish(self, subject: str, body: dict[str, Any] | bytes) -> None:
        data = body if isinstance(body, bytes) else msgspec.json.encode(body)
        await self.nc.jetstream().publish(
            subjects.with_prefix(self.settings.nats.subject_prefix, subject), data, timeout=10
        )

    async def request(self, subject: str, body: dict[str, Any]) -> dict[str, Any]:
        reply = await self.nc.request(
            subjects.with_prefix(self.settings.nats.subject_prefix, subject),
            msgspec.json.encode(body),
            timeout=10,
        )
        result: dict[str, Any] = msgspec.json.decode(reply.data)
        return result


@asynccontextmanager
async def client_for(settings: Settings) -> AsyncIterator[Client]:
    """A connected client app listening to the service's events."""
    nc = await nats.connect(list(settings.nats.servers))
    events = EventLog(prefix=settings.nats.subject_prefix)
    await nc.subscribe(f"{settings.nats.subject_prefix}bgremove.>", cb=events.on_message)
    await nc.subscribe(f"{settings.nats.subject_prefix}upscaler.requested", cb=events.on_message)
    await nc.flush()
    try:
        yield Client(settings, nc, build_object_store(settings.storage), events)
    finally:
        await nc.close()


@asynccontextmanager
async def service_and_client(settings: Settings) -> AsyncIterator[Client]:
    """The in-process service and a client of it."""
    async with running_app(settings), client_for(settings) as client:
        yield client


def batch_request(
    request_id: str, user: str, refs: list[dict[str, str]], tier: Tier = Tier.STANDARD, **extra: Any
) -> dict[str, Any]:
    """A `bgremove.batch.requested` body."""
    images = [{"filename": f"photo-{i}.png", "ref": ref} for i, ref in enumerate(refs)]
    return {"request_id": request_id, "user_id": user, "tier": tier.value, "images": images,
            "correlation": {"app": "web", "ref": f"ui-{request_id}"}, **extra}  # fmt: skip
