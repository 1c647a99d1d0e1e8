"""Workers SIGKILLed at 10 %, 50 % and 90 % of a batch, with one and two workers:
a fresh worker finishes the batch, nothing lost or done twice, charged once."""

from __future__ import annotations

import pytest

from tests.reliability.harness import Service
from tests.reliability.stack import (
    Stack,
    assert_all_done,
    client_of,
    submit_batch,
    wait_batches_completed,
    wait_done_at_least,
)

COUNT = 30
#: Short ack wait: the killed worker's items come back within seconds.
CRASHY = {"WORK_ACK_WAIT_S": "3"}


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize(
    "at_percent",
    [pytest.param(10, marks=pytest.mark.long), 50, pytest.param(90, marks=pytest.mark.long)],
)
@pytest.mark.timeout(240)
async def test_a_killed_worker_loses_and_doubles_nothing(
    stack: Stack, workers: int, at_percent: int
) -> None:
    running: list[Service] = []
    try:
        running += [await stack.service(f"worker{n}", **CRASHY).start() for n in range(workers)]
        async with client_of(stack) as client:
            await submit_batch(client, "ann", COUNT, f"crash-{at_percent}-{workers}")
            await wait_done_at_least(stack.database_url, COUNT * at_percent // 100)
            for service in running:
                service.proc.kill()  # SIGKILL: items in flight stay unacked
            replacement = await stack.service("replacement", **CRASHY).start()
            running.append(replacement)
            await wait_batches_completed(stack.database_url, 1, 120)
            await assert_all_done(stack, client, "ann", COUNT)
    finally:
        for service in running:
            service.proc.kill()
