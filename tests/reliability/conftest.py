"""Fixtures of the reliability suite: servers each test may kill, pause or restart.

PostgreSQL and the S3 server are private to this suite (stopping them must not
disturb other tests) and shared by its tests; NATS is private to each test.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from lumiku_bgremover.db import connect, migrate
from lumiku_bgremover.settings import S3Settings
from tests.fixtures._common import unique_token
from tests.fixtures.postgres import fresh_database
from tests.reliability.cluster import NatsCluster
from tests.reliability.harness import MotoS3, NatsNode, Postgres
from tests.reliability.stack import Stack


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/reliability/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.reliability)


@pytest.fixture(scope="session")
def reliability_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    server = Postgres(tmp_path_factory.mktemp("rel-pg") / "data")
    try:
        yield server
    finally:
        server.cleanup()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def reliability_s3(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[MotoS3]:
    server = MotoS3(tmp_path_factory.mktemp("rel-s3"))
    await server.start()
    try:
        yield server
    finally:
        server.proc.stop()


@contextlib.asynccontextmanager
async def stack_on(
    nats: NatsNode | NatsCluster, pg: Postgres, s3_server: MotoS3, workdir: Path
) -> AsyncIterator[Stack]:
    """A fresh database and bucket namespace beside the suite's servers, on `nats`."""
    pg.start()  # a previous test may have left it stopped
    s3_server.resume()
    namespace = unique_token()
    s3 = S3Settings(
        endpoint=s3_server.endpoint, access_key="testing", secret_key="testing",
        bucket=namespace, region="us-east-1", secure=False,
    )  # fmt: skip
    try:
        await nats.start()
        async with fresh_database(pg.uri()) as url:
            async with connect(url) as conn:
                await migrate(conn)
            yield Stack(nats, s3, url, namespace, workdir)
            pg.start()
    finally:
        nats.kill()


@pytest_asyncio.fixture
async def stack(
    reliability_pg: Postgres, reliability_s3: MotoS3, tmp_path: Path
) -> AsyncIterator[Stack]:
    """One NATS server of the test's own."""
    node = NatsNode(tmp_path / "nats")
    async with stack_on(node, reliability_pg, reliability_s3, tmp_path) as built:
        yield built


@pytest_asyncio.fixture
async def cluster_stack(
    reliability_pg: Postgres, reliability_s3: MotoS3, tmp_path: Path
) -> AsyncIterator[Stack]:
    """A three-node JetStream cluster of the test's own; streams at three replicas."""
    cluster = NatsCluster(tmp_path / "nats")
    async with stack_on(cluster, reliability_pg, reliability_s3, tmp_path) as built:
        yield built
