"""asyncpg connections and pools with our codecs: jsonb in and out as Python objects."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final

import asyncpg
import msgspec

from lumiku_bgremover.settings import DatabaseSettings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = [
    "APPLICATION_NAME",
    "COMMAND_TIMEOUT_S",
    "connect",
    "create_pool",
    "init_connection",
    "keep_session",
]

#: Seconds a single statement may run before asyncpg cancels it.
COMMAND_TIMEOUT_S: Final = 30.0
#: Seconds to wait for a new connection to be established.
CONNECT_TIMEOUT_S: Final = 10.0
#: Shown in `pg_stat_activity.application_name`.
APPLICATION_NAME: Final = "lumiku-bgremover"

_SERVER_SETTINGS: Final = {"application_name": APPLICATION_NAME}


def _encode_json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def _decode_json(text: str) -> Any:
    return msgspec.json.decode(text)


async def init_connection(conn: asyncpg.Connection) -> None:
    """Install the json and jsonb codecs: columns take and return Python objects.

    Values are encoded with msgspec, so msgspec Structs may be stored directly.
    """
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name, schema="pg_catalog", encoder=_encode_json, decoder=_decode_json
        )


async def keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset on release: nothing beyond asyncpg's own rollback.

    asyncpg's default reset runs ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
    RESET ALL`` on every release: one more round trip per use, as long as a quote's
    query. Before calling this, asyncpg still rolls back a transaction left open. The
    rest is session state that pooled code never leaves: transactions take only
    ``pg_advisory_xact_lock`` (released at their end), nothing LISTENs, nothing runs
    ``SET`` (the server settings are fixed at connect), cursors live only inside
    transactions. The one session advisory lock (``migrate``) is taken on a
    connection of its own (``connect``) and unlocked in a ``finally``.
    """
    del conn


async def create_pool(
    settings: DatabaseSettings, *, command_timeout: float = COMMAND_TIMEOUT_S
) -> asyncpg.Pool:
    """A connection pool sized by `settings`, every connection set up by `init_connection`,
    released without a reset query (`keep_session`)."""
    return await asyncpg.create_pool(
        settings.url,
        min_size=settings.pool_min,
        max_size=settings.pool_max,
        command_timeout=command_timeout,
        timeout=CONNECT_TIMEOUT_S,
        server_settings=_SERVER_SETTINGS,
        init=init_connection,
        reset=keep_session,
    )


@asynccontextmanager
async def connect(
    url: str, *, command_timeout: float | None = COMMAND_TIMEOUT_S
) -> AsyncIterator[asyncpg.Connection]:
    """One connection set up like the pool's, closed on exit (migrations, one-off tools)."""
    conn = await asyncpg.connect(
        url,
        command_timeout=command_timeout,
        timeout=CONNECT_TIMEOUT_S,
        server_settings=_SERVER_SETTINGS,
    )
    try:
        await init_connection(conn)
        yield conn
    finally:
        await conn.close()
