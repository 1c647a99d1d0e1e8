"""The work consumers as provisioned: their lag, and pausing or resuming them.

Pausing uses JetStream's consumer pause (nats-server 2.11 or newer): the server stops
delivering to a paused consumer until the pause ends or it is resumed. A pause survives
`provision` and restarts of the service (updating a consumer keeps its pause).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from nats.js import JetStreamContext

from lumiku_bgremover.contracts.work import Lane
from lumiku_bgremover.provisioning import StreamNames
from lumiku_bgremover.settings import Limits, NatsSettings

__all__ = [
    "PAUSE_FOREVER",
    "ConsumerState",
    "lag_by_lane",
    "pause",
    "resume",
    "rfc3339",
    "work_consumer_names",
    "work_consumers",
]

#: The end of an operator's pause that has no end.
PAUSE_FOREVER: Final = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class ConsumerState:
    """One work consumer (a lane's partition) as the server reports it."""

    lane: Lane
    partition: int
    name: str
    pending: int  #: stored, not delivered yet
    ack_pending: int  #: delivered, not acknowledged yet
    redelivered: int
    waiting: int  #: pull requests waiting (workers polling)
    paused: bool

    @property
    def lag(self) -> int:
        """Work not finished yet: what KEDA's `nats-jetstream` scaler counts."""
        return self.pending + self.ack_pending


def work_consumer_names(
    settings: NatsSettings, limits: Limits, lanes: Iterable[Lane] = tuple(Lane)
) -> list[tuple[Lane, int, str]]:
    """(lane, partition, durable name) of every provisioned work consumer of `lanes`."""
    names = StreamNames.of(settings)
    return [
        (lane, partition, names.work_consumer(lane, partition))
        for lane in lanes
        for partition in range(limits.work_partitions)
    ]


async def work_consumers(
    js: JetStreamContext, settings: NatsSettings, limits: Limits
) -> list[ConsumerState]:
    """The state of every work consumer, in lane then partition order."""
    stream = StreamNames.of(settings).work
    states = []
    for lane, partition, name in work_consumer_names(settings, limits):
        info = await js.consumer_info(stream, name)
        states.append(
            ConsumerState(
                lane=lane,
                partition=partition,
                name=name,
                pending=info.num_pending or 0,
                ack_pending=info.num_ack_pending or 0,
                redelivered=info.num_redelivered or 0,
                waiting=info.num_waiting or 0,
                paused=bool(info.paused),
            )
        )
    return states


def lag_by_lane(states: Sequence[ConsumerState]) -> dict[Lane, int]:
    """The summed lag of each lane (every lane present, 0 when idle)."""
    lags = dict.fromkeys(Lane, 0)
    for state in states:
        lags[state.lane] += state.lag
    return lags


def rfc3339(moment: datetime) -> str:
    """`moment` in UTC as JetStream wants it: `2026-05-01T12:00:00Z`."""
    if moment.tzinfo is None:
        raise ValueError("a pause end needs a time zone")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def pause(
    js: JetStreamContext,
    settings: NatsSettings,
    limits: Limits,
    lanes: Iterable[Lane],
    *,
    until: datetime = PAUSE_FOREVER,
) -> list[str]:
    """Pause the work consumers of `lanes` until `until`; the names paused."""
    stream = StreamNames.of(settings).work
    names = [name for _, _, name in work_consumer_names(settings, limits, lanes)]
    for name in names:
        await js.pause_consumer(stream, name, rfc3339(until))
    return names


async def resume(
    js: JetStreamContext, settings: NatsSettings, limits: Limits, lanes: Iterable[Lane]
) -> list[str]:
    """Resume the work consumers of `lanes` at once; the names resumed."""
    stream = StreamNames.of(settings).work
    names = [name for _, _, name in work_consumer_names(settings, limits, lanes)]
    for name in names:
        await js.resume_consumer(stream, name)
    return names
