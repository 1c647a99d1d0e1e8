"""`lumiku-bgremover queue stats|pause|resume`: the work queue's consumers, on JetStream."""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

from nats.js import JetStreamContext

from lumiku_bgremover import messaging
from lumiku_bgremover.commands.common import EXIT_OK, EXIT_USAGE, say, shout
from lumiku_bgremover.contracts.work import Lane
from lumiku_bgremover.operations import queue as ops
from lumiku_bgremover.settings import NatsSettings, Settings

__all__ = ["add_arguments", "format_stats", "jetstream", "pause_end", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`stats [--json]`, `pause [--lane L] [--until T | --for S]`, `resume [--lane L]`."""
    actions = parser.add_subparsers(dest="action", required=True)
    stats = actions.add_parser("stats", help="lag, redeliveries and pauses of each consumer")
    stats.add_argument("--json", action="store_true", help="print JSON")
    stop = actions.add_parser("pause", help="stop deliveries of work items (until resumed)")
    resume = actions.add_parser("resume", help="deliver work items again")
    for sub in (stop, resume):
        sub.add_argument("--lane", choices=[lane.value for lane in Lane], help="default: both")
    until = stop.add_mutually_exclusive_group()
    until.add_argument("--until", help="RFC 3339 time the pause ends (default: never)")
    until.add_argument("--for", dest="for_s", type=float, help="seconds the pause lasts")


@asynccontextmanager
async def jetstream(settings: NatsSettings) -> AsyncIterator[JetStreamContext]:
    """A JetStream context on a connection of its own, closed on exit."""
    nc = await messaging.connect(settings, name=f"{messaging.CLIENT_NAME}-cli")
    try:
        yield nc.jetstream(timeout=settings.publish_timeout_s)
    finally:
        await nc.close()


def pause_end(until: str | None, for_s: float | None, now: datetime) -> datetime:
    """When a pause ends: `--until`, now + `--for`, or never; `ValueError` if malformed."""
    if for_s is not None:
        if for_s <= 0:
            raise ValueError("--for must be positive")
        return now + timedelta(seconds=for_s)
    if until is None:
        return ops.PAUSE_FOREVER
    moment = datetime.fromisoformat(until)
    if moment.tzinfo is None:
        raise ValueError("--until needs a time zone, e.g. 2026-05-01T12:00:00Z")
    return moment


def format_stats(states: Sequence[ops.ConsumerState]) -> str:
    """One row per consumer, then the lag of each lane."""
    header = f"{'consumer':<36} {'pending':>8} {'ack':>6} {'redeliv':>8} {'waiting':>8}  paused"
    lines = [header]
    for s in states:
        paused = "yes" if s.paused else "no"
        lines.append(
            f"{s.name:<36} {s.pending:>8} {s.ack_pending:>6} {s.redelivered:>8} "
            f"{s.waiting:>8}  {paused}"
        )
    lags = ops.lag_by_lane(states)
    lines += [f"lag {lane.value}: {lag}" for lane, lag in lags.items()]
    lines.append(f"lag total: {sum(lags.values())}")
    return "\n".join(lines)


def _stats_json(states: Sequence[ops.ConsumerState]) -> str:
    lags = ops.lag_by_lane(states)
    return json.dumps(
        {
            "consumers": [
                {"name": s.name, "lane": s.lane.value, "partition": s.partition,
                 "pending": s.pending, "ack_pending": s.ack_pending, "lag": s.lag,
                 "redelivered": s.redelivered, "waiting": s.waiting, "paused": s.paused}
                for s in states
            ],
            "lag": {lane.value: lag for lane, lag in lags.items()},
            "lag_total": sum(lags.values()),
        }
    )  # fmt: skip


async def _act(js: JetStreamContext, settings: Settings, args: argparse.Namespace) -> list[str]:
    lanes = [Lane(args.lane)] if args.lane else list(Lane)
    if args.action == "resume":
        return await ops.resume(js, settings.nats, settings.limits, lanes)
    end = pause_end(args.until, args.for_s, datetime.now(UTC))
    return await ops.pause(js, settings.nats, settings.limits, lanes, until=end)


async def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run `queue stats`, `queue pause` or `queue resume`."""
    try:
        async with jetstream(settings.nats) as js:
            if args.action == "stats":
                states = await ops.work_consumers(js, settings.nats, settings.limits)
                say(_stats_json(states) if args.json else format_stats(states))
                return EXIT_OK
            names = await _act(js, settings, args)
    except ValueError as error:
        shout(f"queue {args.action}: {error}")
        return EXIT_USAGE
    verb = "paused" if args.action == "pause" else "resumed"
    say("\n".join(f"{verb} {name}" for name in names))
    return EXIT_OK
