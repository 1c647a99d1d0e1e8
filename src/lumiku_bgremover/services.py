"""The adapters handlers are given, and the key under which FastStream's context holds them.

A module of its own so that handlers can import it without importing `app`
(which imports the handlers to register them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg

from lumiku_bgremover.settings import Settings
from lumiku_bgremover.storage import ObjectStore

__all__ = ["SERVICES_KEY", "Clock", "Services", "utc_now"]

#: Key under which handlers find the `Services` in FastStream's context.
SERVICES_KEY = "services"

#: A source of the current time (timezone-aware); tests pin it.
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The current time in UTC (the default `Clock`)."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Services:
    """The adapters handlers are given (built once, in the lifespan)."""

    settings: Settings
    pool: asyncpg.Pool
    store: ObjectStore
    clock: Clock = field(default=utc_now)
