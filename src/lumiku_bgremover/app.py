"""Wiring: the FastStream application, its broker and the adapters its handlers use."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg
from faststream import ContextRepo, FastStream
from faststream.nats import NatsBroker

from lumiku_bgremover import db, messaging
from lumiku_bgremover.provisioning import provision_streams
from lumiku_bgremover.settings import Settings
from lumiku_bgremover.storage import ObjectStore, build_object_store

log = logging.getLogger(__name__)

#: Key under which handlers find the `Services` in FastStream's context.
SERVICES_KEY = "services"


class StartupError(RuntimeError):
    """The service cannot start; the message says what to do."""


@dataclass(frozen=True, slots=True)
class Services:
    """The adapters handlers are given (built once, in the lifespan)."""

    settings: Settings
    pool: asyncpg.Pool
    store: ObjectStore


async def provision(settings: Settings, store: ObjectStore) -> dict[str, str]:
    """Streams and the bucket; returns what happened to each stream."""
    await store.ensure_bucket()
    nc = await messaging.connect(settings.nats, name=f"{messaging.CLIENT_NAME}-provision")
    try:
        actions = await provision_streams(nc.jetstream(), settings.nats, settings.limits)
    finally:
        await nc.close()
    return {name: str(action) for name, action in actions.items()}


async def check_schema(pool: asyncpg.Pool) -> None:
    """Refuse to start on a database whose migrations have not been applied."""
    async with pool.acquire() as conn:
        waiting = await db.pending(conn)
    if waiting:
        raise StartupError(
            f"database schema is behind ({', '.join(waiting)} not applied): "
            "run `lumiku-bgremover migrate` first"
        )


@asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    """Connect the pool, check the schema, provision streams and bucket; close on exit."""
    pool = await db.create_pool(settings.require_database())
    try:
        await check_schema(pool)
        store = build_object_store(settings.storage)
        for stream, action in (await provision(settings, store)).items():
            log.info("stream %s: %s", stream, action)
        yield Services(settings=settings, pool=pool, store=store)
    finally:
        await pool.close()


def create_app(settings: Settings, broker: NatsBroker | None = None) -> FastStream:
    """The service: a broker plus a lifespan that owns the adapters."""
    broker = broker or messaging.build_broker(settings.nats)
    context = ContextRepo()

    @asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        async with open_services(settings) as services:
            context.set_global(SERVICES_KEY, services)
            yield

    async def announce() -> None:
        log.info("lumiku-bgremover ready")

    return FastStream(broker, lifespan=lifespan, context=context, after_startup=[announce])
