import asyncio

import pytest

from lumiku_bgremover.queue import backoff_delay, cancel_all, pick


@pytest.mark.parametrize(
    ("ready", "cursors", "expected", "cursors_after"),
    [
        ([[False, False], [False, False]], [0, 0], None, [0, 0]),
        ([[False, True], [True, True]], [0, 0], (0, 1), [0, 0]),  # interactive first
        ([[False, False], [True, True]], [0, 0], (1, 0), [0, 1]),
        ([[False, False], [True, True]], [0, 1], (1, 1), [0, 0]),  # turn moves on
        ([[False, False], [True, False, True]], [0, 1], (1, 2), [0, 0]),  # skips empty
        ([[True, True, True], [True]], [2, 0], (0, 2), [0, 0]),  # wraps
    ],
)
def test_pick(
    ready: list[list[bool]],
    cursors: list[int],
    expected: tuple[int, int] | None,
    cursors_after: list[int],
) -> None:
    assert pick(ready, cursors) == expected
    if expected is not None:
        lane = expected[0]
        assert cursors[lane] == cursors_after[lane]


def test_round_robin_serves_every_ready_partition_in_turn() -> None:
    cursors = [0, 0]
    ready = [[False] * 4, [True] * 4]
    served = [pick(ready, cursors) for _ in range(8)]
    assert served == [(1, 0), (1, 1), (1, 2), (1, 3)] * 2


@pytest.mark.parametrize(
    ("attempt", "expected"), [(1, 2.0), (2, 4.0), (3, 8.0), (6, 64.0), (7, 120.0), (30, 120.0)]
)
def test_backoff_grows_then_caps(attempt: int, expected: float) -> None:
    assert backoff_delay(attempt) == expected


def test_backoff_jitter_is_a_share_of_the_delay() -> None:
    assert backoff_delay(2, jitter=0.25) == 5.0
    assert backoff_delay(2, jitter=-0.25) == 3.0


async def test_cancel_all_cancels_again_a_task_that_swallowed_a_cancel() -> None:
    swallowed = []

    async def stubborn() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            swallowed.append(True)  # as a lost cancel in asyncio.wait_for would
        await asyncio.sleep(60)

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_all({task}, patience_s=0.05), 5)
    assert task.cancelled()
    assert swallowed == [True]
