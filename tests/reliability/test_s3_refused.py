"""The S3 endpoint refusing connections (not paused) in the middle of a batch.

The service reaches moto through `TcpProxy`, which resets every open connection and
stops listening for the outage, then listens again on the same port: connects are
refused (ECONNREFUSED) and moto keeps its state. No item may fail for it: the
refusal goes through the worker's gate (probe, hold, resume on the same delivery).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.reliability.harness import MotoS3
from tests.reliability.proxy import TcpProxy
from tests.reliability.stack import (
    Stack,
    assert_all_done,
    client_of,
    submit_batch,
    wait_batches_completed,
    wait_done_at_least,
)

COUNT = 30


@pytest.fixture
def s3_proxy(reliability_s3: MotoS3) -> Iterator[TcpProxy]:
    proxy = TcpProxy("127.0.0.1", reliability_s3.port).start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.mark.parametrize(
    "outage_s", [pytest.param(10, id="10s"), pytest.param(60, id="60s", marks=pytest.mark.long)]
)
@pytest.mark.timeout(300)
async def test_s3_refusing_connections_fails_no_item(
    stack: Stack, s3_proxy: TcpProxy, outage_s: int
) -> None:
    service = await stack.service("worker", S3_ENDPOINT=s3_proxy.endpoint).start()
    try:
        async with client_of(stack) as client:  # the test's own client goes to moto directly
            await submit_batch(client, "ann", COUNT, "s3-refused")
            await wait_done_at_least(stack.database_url, 4)
            s3_proxy.down()
            try:
                await asyncio.sleep(outage_s)  # holds the outage; nothing waits on it
            finally:
                s3_proxy.up()
            await wait_batches_completed(stack.database_url, 1, 120)
            await assert_all_done(stack, client, "ann", COUNT)
        log = service.proc.log()
        assert "dependency down" in log, "the outage reached the worker's gate"
        assert "resuming work" in log
    finally:
        service.proc.kill()
