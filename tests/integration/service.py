"""Run the service for integration tests: in-process (FastStream app) or as `lumiku-bgremover`.

Plain helpers, not fixtures, so any test module can build its own fixtures on them.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import nats.aio.client
import pytest
from faststream import TestApp
from nats.errors import NoRespondersError

from lumiku_bgremover.app import create_app
from lumiku_bgremover.contracts.subjects import ADMIN_SUBJECTS, QUOTE, with_prefix
from lumiku_bgremover.services import Clock
from lumiku_bgremover.settings import (
    DEFAULT_ROUTES,
    DatabaseSettings,
    EngineSettings,
    NatsSettings,
    Route,
    S3Settings,
    Settings,
    StorageSettings,
)
from tests.fixtures._common import free_port

#: Every tier on the fake engine: the hosted engines are not part of this build yet.
FAKE_ROUTES = {tier: Route(engine="fake", model="fake-matte") for tier in DEFAULT_ROUTES}
FAKE_ROUTING = ",".join(f"{tier.value}=fake:fake-matte" for tier in DEFAULT_ROUTES)

#: The time tests pin the service's clock to: 15:15 in Jakarta, 31 January 2025.
PINNED_NOW = datetime(2025, 1, 31, 8, 15, tzinfo=UTC)


def pinned_clock(now: datetime = PINNED_NOW) -> Clock:
    """A clock that always answers `now`."""
    return lambda: now


def service_settings(
    nats_url: str,
    namespace: str,
    database_url: str,
    s3: S3Settings,
    *,
    admin: bool = False,
) -> Settings:
    """Settings for an in-process service isolated under the test's namespace."""
    return Settings(
        nats=NatsSettings(
            servers=(nats_url,), subject_prefix=f"{namespace}.", stream_prefix=namespace.upper()
        ),
        database=DatabaseSettings(url=database_url, pool_min=1, pool_max=4),
        storage=StorageSettings(backend="s3", s3=s3),
        engines=EngineSettings(routes=dict(FAKE_ROUTES)),
        admin_subjects_enabled=admin,
    )


#: How long `running_app` waits for the quote subject to answer after start-up.
ANSWERING_WITHIN_S = 5.0


async def _probe(nc: nats.aio.client.Client, subject: str) -> None:
    deadline = time.monotonic() + ANSWERING_WITHIN_S
    while True:
        try:
            await nc.request(subject, b"", timeout=1)  # any handler answers an ErrorReply
            return
        except NoRespondersError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.005)


async def wait_until_answering(settings: Settings) -> None:
    """Probe the app's request-reply subjects until each one answers.

    nats-server can answer "no responders" for a moment (under a millisecond here)
    even after the subscriber's connection was flushed, so "ready" is proven by an
    answer, not assumed.
    """
    names = (QUOTE, *(ADMIN_SUBJECTS if settings.admin_subjects_enabled else ()))
    nc = await nats.connect(list(settings.nats.servers))
    try:
        for name in names:
            await _probe(nc, with_prefix(settings.nats.subject_prefix, name))
    finally:
        await nc.close()


@asynccontextmanager
async def running_app(
    settings: Settings, clock: Clock | None = None, **options: Any
) -> AsyncIterator[None]:
    """The real app (lifespan, provisioning, handlers) connected to real servers,
    answering on the quote subject before this yields; `options` go to `create_app`."""
    app = create_app(settings, clock=clock or pinned_clock(), **options)
    async with TestApp(app):
        await wait_until_answering(settings)
        yield


def service_environment(
    nats_url: str, namespace: str, database_url: str, s3: S3Settings
) -> dict[str, str]:
    """Environment variables for `lumiku-bgremover` under the test's namespace."""
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "NATS_URL": nats_url,
        "NATS_SUBJECT_PREFIX": f"{namespace}.",
        "NATS_STREAM_PREFIX": namespace.upper(),
        "DATABASE_URL": database_url,
        "S3_ENDPOINT": s3.endpoint,
        "S3_ACCESS_KEY": s3.access_key,
        "S3_SECRET_KEY": s3.secret_key,
        "S3_BUCKET": s3.bucket,
        "S3_REGION": s3.region,
        "S3_SECURE": str(s3.secure).lower(),
        "TIER_ROUTING": FAKE_ROUTING,
        "METRICS_PORT": str(free_port()),
        "INTEGRATIONS_PROVISION_STREAM": "true",
    }


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run `lumiku-bgremover <args>` with `env` and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "lumiku_bgremover.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def wait_for_line(
    path: Path, text: str, process: subprocess.Popen[str], limit_s: float = 60
) -> None:
    """Wait until `text` appears in the log at `path`; fail if the process exits first."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if text in path.read_text():
            return
        if process.poll() is not None:
            pytest.fail(f"service exited {process.returncode}:\n{path.read_text()}")
        time.sleep(0.1)
    pytest.fail(f"no {text!r} within {limit_s} s:\n{path.read_text()}")


@contextmanager
def service_process(env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen[str]]:
    """`lumiku-bgremover run` until it says it is ready; killed on exit."""
    with log_path.open("w+") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "lumiku_bgremover.cli", "run"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            wait_for_line(log_path, "lumiku-bgremover ready", process)
            yield process
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)
