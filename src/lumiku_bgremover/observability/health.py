"""Readiness: each dependency the service needs, checked concurrently under a timeout.

A check is a coroutine function that returns normally when its dependency is usable
and raises (any exception) when it is not. Liveness needs no check: an HTTP answer
from the event loop is the proof that the process is not stuck.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import asyncpg
from nats.aio.client import Client

from lumiku_bgremover.storage import ObjectStore

__all__ = [
    "Check",
    "NotReadyError",
    "Readiness",
    "ReadinessReport",
    "bucket_check",
    "nats_check",
    "nats_client_ping",
    "postgres_check",
]

Check = Callable[[], Awaitable[None]]
#: Says within `timeout` seconds whether NATS is connected (FastStream's `broker.ping`).
Ping = Callable[[float], Awaitable[bool]]


class NotReadyError(Exception):
    """A dependency answered, but not in a usable way."""


@dataclass(frozen=True, slots=True)
class ReadinessReport:
    """Each check's result: "ok", or what went wrong."""

    results: Mapping[str, str]

    @property
    def ready(self) -> bool:
        """True when every check passed."""
        return all(result == "ok" for result in self.results.values())


class Readiness:
    """Runs named checks concurrently, each within `timeout_s`."""

    def __init__(self, checks: Mapping[str, Check], *, timeout_s: float) -> None:
        self._checks = dict(checks)
        self._timeout_s = timeout_s

    async def check(self) -> ReadinessReport:
        """Run every check once."""
        names = list(self._checks)
        results = await asyncio.gather(*(self._run(self._checks[name]) for name in names))
        return ReadinessReport(dict(zip(names, results, strict=True)))

    async def _run(self, check: Check) -> str:
        try:
            await asyncio.wait_for(check(), self._timeout_s)
        except TimeoutError:
            return f"no answer within {self._timeout_s:g} s"
        except Exception as error:  # noqa: BLE001 (any failure means "not ready")
            return f"{type(error).__name__}: {error}"
        return "ok"


def nats_client_ping(nc: Client) -> Ping:
    """A `Ping` over a plain nats-py client: connected, and a round trip answers."""

    async def ping(wait_s: float) -> bool:
        if not nc.is_connected:
            return False
        await nc.flush(timeout=max(math.ceil(wait_s), 1))
        return True

    return ping


def nats_check(ping: Ping, timeout_s: float) -> Check:
    """NATS is connected."""

    async def check() -> None:
        if not await ping(timeout_s):
            raise NotReadyError("not connected to NATS")

    return check


def postgres_check(pool: asyncpg.Pool, timeout_s: float) -> Check:
    """PostgreSQL answers `SELECT 1` on a pooled connection."""

    async def check() -> None:
        async with pool.acquire(timeout=timeout_s) as conn:
            await conn.fetchval("SELECT 1", timeout=timeout_s)

    return check


def bucket_check(store: ObjectStore) -> Check:
    """The object store answers and the service's bucket exists."""

    async def check() -> None:
        if not await store.bucket_exists():
            raise NotReadyError(f"bucket {store.bucket} does not exist")

    return check
