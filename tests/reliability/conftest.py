"""Fixtures of the reliability suite: servers each test may kill, pause or restart.

PostgreSQL and the S3 server are private to this suite (stopping them must not
disturb other tests) and shared by its tests; NATS is private to each test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from lumiku_bgremover.db import connect, migrate
from lumiku_bgremover.settings import S3Settings
from tests.fixtures._common import unique_token
from tests.fixtures.postgres import fresh_database
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


@pytest_asyncio.fixture
async def stack(
    reliability_pg: Postgres, reliability_s3: MotoS3, tmp_path: Path
) -> AsyncIterator[Stack]:
    reliability_pg.start()  # a previous test may have left it stopped
    reliability_s3.resume()
    node = NatsNode(tmp_path / "nats")
    await node.start()
    namespace = unique_token()
    s3 = S3Settings(
        endpoint=reliability_s3.endpoint, access_key="testing", secret_key="testing",
        bucket=namespace, region="us-east-1", secure=False,
    )  # fmt: skip
    try:
        async with fresh_database(reliability_pg.uri()) as url:
            async with connect(url) as conn:
                await migrate(conn)
            yield Stack(node, s3, url, namespace, tmp_path)
            reliability_pg.start()
    finally:
        node.kill()
