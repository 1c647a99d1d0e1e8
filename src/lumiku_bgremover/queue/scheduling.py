"""Pure scheduling rules of the work queue: partitions, backoff, whose turn it is."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from lumiku_bgremover.contracts.work import Lane

#: Lanes in the order they are served.
LANE_ORDER: Final[tuple[Lane, ...]] = (Lane.INTERACTIVE, Lane.BULK)


def partition_of(user_id: str, partitions: int) -> int:
    """The partition the server's `{{partition(P,...)}}` transform gives a user (FNV-1a 32)."""
    digest = 0x811C9DC5
    for byte in user_id.encode():
        digest = ((digest ^ byte) * 0x01000193) & 0xFFFFFFFF
    return digest % partitions


def backoff_delay(
    attempt: int, *, base_s: float = 2.0, cap_s: float = 120.0, jitter: float = 0.0
) -> float:
    """Delay before delivery `attempt + 1`: base * 2^(attempt-1), capped, +/- jitter share."""
    delay = min(cap_s, base_s * float(2 ** max(0, attempt - 1)))
    return delay * (1.0 + jitter)


def pick(ready: Sequence[Sequence[bool]], cursors: list[int]) -> tuple[int, int] | None:
    """The (lane, partition) to serve next: first lane with a ready partition, round-robin.

    `ready[lane][partition]` says whether a message is waiting; `cursors[lane]` is
    where that lane's turn starts and is moved past the partition picked.
    """
    for lane, partitions in enumerate(ready):
        count = len(partitions)
        for step in range(count):
            partition = (cursors[lane] + step) % count
            if partitions[partition]:
                cursors[lane] = (partition + 1) % count
                return lane, partition
    return None
