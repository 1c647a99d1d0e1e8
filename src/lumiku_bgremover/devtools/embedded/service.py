"""The service, run inside the current process (the demo's), answering before use."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from faststream import FastStream

from lumiku_bgremover import messaging
from lumiku_bgremover.app import create_app
from lumiku_bgremover.contracts.subjects import QUOTE, with_prefix
from lumiku_bgremover.devtools.embedded.client import wait_answering
from lumiku_bgremover.settings import Settings

__all__ = ["in_process_service"]


@asynccontextmanager
async def in_process_service(settings: Settings) -> AsyncIterator[FastStream]:
    """`create_app(settings)` started as `lumiku-bgremover run` starts it (lifespan,
    provisioning, model loading, handlers), but without taking over the process's
    signals; yields once the quote subject answers, stops it (in-flight work first)
    on exit."""
    app = create_app(settings)
    async with app.lifespan_context():
        await app.start()
        try:
            nc = await messaging.connect(settings.nats, name=f"{messaging.CLIENT_NAME}-probe")
            try:
                await wait_answering(nc, with_prefix(settings.nats.subject_prefix, QUOTE))
            finally:
                await nc.close()
            yield app
        finally:
            await app.stop()
