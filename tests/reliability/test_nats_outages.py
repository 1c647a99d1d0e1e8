"""NATS killed and restarted (file store, same port) in the middle of a batch, and
SIGTERM while NATS is away: the service reconnects by itself, loses and doubles
nothing, and always stops promptly when told to."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from tests.reliability.harness import eventually
from tests.reliability.stack import (
    Stack,
    assert_all_done,
    client_of,
    submit_batch,
    wait_batches_completed,
    wait_done_at_least,
)

COUNT = 30
#: Seconds a service may take to exit after SIGTERM (Kubernetes' default grace is 30 s).
STOP_WITHIN_S = 20.0


@pytest.mark.parametrize(
    "outage_s",
    [
        pytest.param(3, id="3s"),
        pytest.param(20, id="20s", marks=pytest.mark.long),
        pytest.param(180, id="180s", marks=[pytest.mark.long, pytest.mark.timeout(600)]),
    ],
)
@pytest.mark.timeout(300)
async def test_nats_restart_mid_batch_loses_and_doubles_nothing(
    stack: Stack, outage_s: int
) -> None:
    service = await stack.service("worker").start()
    try:
        async with client_of(stack) as client:
            await submit_batch(client, "ann", COUNT, "nats-restart")
            await wait_done_at_least(stack.database_url, 4)
            stack.nats.kill()
            await asyncio.sleep(outage_s)
            assert service.proc.alive
            await stack.nats.start()
            await wait_batches_completed(stack.database_url, 1, 180)
            await assert_all_done(stack, client, "ann", COUNT)
        await eventually(
            lambda: "NATS connection re-established" in service.proc.log(), 30, "reconnected"
        )
    finally:
        service.proc.kill()


@pytest.mark.timeout(180)
async def test_sigterm_during_a_nats_outage_exits_promptly(stack: Stack) -> None:
    service = await stack.service("worker", FAKE_ENGINE_DELAY_S="0.5", WORK_ACK_WAIT_S="10").start()
    try:
        async with client_of(stack) as client:
            await submit_batch(client, "ann", COUNT, "nats-sigterm")
            await wait_done_at_least(stack.database_url, 2)
        stack.nats.kill()
        lost = "NATS connection lost"
        await eventually(lambda: lost in service.proc.log(), 30, "disconnect seen")
        await asyncio.sleep(5)  # in the outage, with items in hand
        started = time.monotonic()
        service.proc.signal(signal.SIGTERM)
        assert service.proc.process is not None
        await eventually(lambda: not service.proc.alive, STOP_WITHIN_S, "exit after SIGTERM")
        assert time.monotonic() - started < STOP_WITHIN_S
        assert service.proc.process.returncode == 0, service.proc.log()[-3000:]
    finally:
        service.proc.kill()
    # NATS back: a fresh service finishes the batch, nothing lost or doubled
    await stack.nats.start()
    second = await stack.service("second", WORK_ACK_WAIT_S="10").start()
    try:
        async with client_of(stack) as client:
            await wait_batches_completed(stack.database_url, 1, 120)
            await assert_all_done(stack, client, "ann", COUNT)
    finally:
        second.proc.kill()
