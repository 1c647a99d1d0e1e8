"""Which errors mean "a dependency is down", and the probes that confirm it.

An outage of PostgreSQL, the object store or NATS must not count against a work
item (or fail a request): such errors are outage candidates, and the work queue's
`DependencyGate` confirms them by probing before it pauses work.
"""

from __future__ import annotations

import asyncpg
import nats.errors
import urllib3.exceptions
from nats.aio.client import Client

from lumiku_bgremover.queue.gate import PROBE_TIMEOUT_S, DependencyGate, Probe
from lumiku_bgremover.storage import ObjectStore

__all__ = ["OUTAGE_ERRORS", "build_gate", "is_outage", "jetstream_probe"]

#: Errors raised when PostgreSQL, the S3 server or NATS cannot be reached (or went away).
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,  # connection lost, refused, does not exist
    asyncpg.InterfaceError,  # "connection is closed", pool closing
    asyncpg.OperatorInterventionError,  # admin shutdown, "cannot connect now" while starting
    OSError,  # refused, reset, unreachable (ConnectionError and friends)
    TimeoutError,  # a connect or a statement that got no answer
    urllib3.exceptions.HTTPError,  # the minio client: max retries, protocol errors
    nats.errors.Error,  # NATS reconnecting, closed, no responders, JetStream timeouts
)


def is_outage(error: BaseException) -> bool:
    """Whether `error` (or the error it was raised from) may come from a dependency outage."""
    return isinstance(error, OUTAGE_ERRORS) or isinstance(error.__cause__, OUTAGE_ERRORS)


async def _database_answers(pool: asyncpg.Pool) -> None:
    async with pool.acquire(timeout=5.0) as conn:
        await conn.fetchval("SELECT 1", timeout=5.0)


async def _stream_answers(nc: Client, stream: str) -> None:
    if not nc.is_connected:
        raise nats.errors.ConnectionReconnectingError
    await nc.jetstream(timeout=PROBE_TIMEOUT_S).stream_info(stream)


def jetstream_probe(nc: Client, stream: str) -> Probe:
    """NATS answers when `stream` does: on a cluster, stream info comes from the stream's
    leader, so a stream electing a leader (or without quorum) counts as down even while
    the connection itself is fine."""
    return Probe("nats", lambda: _stream_answers(nc, stream))


def build_gate(
    pool: asyncpg.Pool, store: ObjectStore, nc: Client, events_stream: str
) -> DependencyGate:
    """The work queue's gate over the database, the object store and NATS (the stream
    every item publishes its event to)."""
    probes = [
        Probe("postgresql", lambda: _database_answers(pool)),
        Probe("object store", store.bucket_exists),
        jetstream_probe(nc, events_stream),
    ]
    return DependencyGate(probes, is_outage)
