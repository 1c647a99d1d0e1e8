"""PostgreSQL stopped and the S3 server paused in the middle of a batch.

An outage of a dependency must not count against an item: every item ends done,
exactly once, the batch completes once, nothing is charged twice or refunded, and
quotes answer an error (not silence) while the database is down.
"""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest

from lumiku_bgremover.contracts import subjects
from tests.reliability.stack import (
    Stack,
    assert_all_done,
    client_of,
    submit_batch,
    wait_batches_completed,
    wait_done_at_least,
)

COUNT = 30
QUOTE = {"user_id": "ann", "tier": "standard", "count": 3}


async def quote_while_down(stack: Stack) -> dict[str, object]:
    async with client_of(stack) as client:
        started = time.monotonic()
        reply = await client.nc.request(
            subjects.with_prefix(stack.settings.nats.subject_prefix, subjects.QUOTE),
            msgspec.json.encode(QUOTE),
            timeout=20,
        )
        body: dict[str, object] = msgspec.json.decode(reply.data)
        body["_seconds"] = time.monotonic() - started
        return body


@pytest.mark.parametrize(
    "outage_s", [pytest.param(10, id="10s"), pytest.param(60, id="60s", marks=pytest.mark.long)]
)
@pytest.mark.timeout(300)
async def test_postgres_outage_fails_no_item(stack: Stack, reliability_pg, outage_s: int) -> None:
    service = await stack.service("worker").start()
    try:
        async with client_of(stack) as client:
            await submit_batch(client, "ann", COUNT, "pg-outage")
            await wait_done_at_least(stack.database_url, 4)
            reliability_pg.stop()
            down_at = time.monotonic()
            answer = await quote_while_down(stack)
            assert answer["code"] == "internal_error", answer
            assert answer["_seconds"] < 15
            await asyncio.sleep(max(0.0, outage_s - (time.monotonic() - down_at)))
            reliability_pg.start()
            await wait_batches_completed(stack.database_url, 1, 120)
            await assert_all_done(stack, client, "ann", COUNT)
        assert "dependency down" in service.proc.log()
        assert "resuming work" in service.proc.log()
    finally:
        service.proc.kill()


@pytest.mark.parametrize(
    "outage_s", [pytest.param(10, id="10s"), pytest.param(60, id="60s", marks=pytest.mark.long)]
)
@pytest.mark.timeout(300)
async def test_s3_pause_fails_no_item(stack: Stack, reliability_s3, outage_s: int) -> None:
    service = await stack.service("worker").start()
    try:
        async with client_of(stack) as client:
            await submit_batch(client, "ann", COUNT, "s3-outage")
            await wait_done_at_least(stack.database_url, 4)
            reliability_s3.pause()
            try:
                await asyncio.sleep(outage_s)
            finally:
                reliability_s3.resume()
            await wait_batches_completed(stack.database_url, 1, 120)
            await assert_all_done(stack, client, "ann", COUNT)
    finally:
        service.proc.kill()
