"""Plain SQL migrations shipped in the package, applied in order under an advisory lock.

Files are `migrations/NNNN_name.sql` (four-digit version, lower-case snake-case name).
Each pending file runs in its own transaction and is recorded in `schema_migrations`
with the sha256 of its bytes; an applied file whose bytes later change is refused.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import dataclass, field
from importlib.resources import files
from typing import TYPE_CHECKING, Final

import asyncpg

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from importlib.resources.abc import Traversable

    from asyncpg.pool import PoolConnectionProxy

    #: A plain connection or one acquired from a pool.
    Conn = asyncpg.Connection | PoolConnectionProxy

__all__ = [
    "MIGRATION_LOCK_KEY",
    "Migration",
    "MigrationError",
    "load_migrations",
    "migrate",
    "pending",
]

#: Key of the session advisory lock held while migrating ("lumiku" + 0x0001).
MIGRATION_LOCK_KEY: Final = 0x6C75_6D69_6B75_0001

_FILE_NAME: Final = re.compile(r"^(?P<version>\d{4})_(?P<label>[a-z0-9]+(?:_[a-z0-9]+)*)\.sql$")

_CREATE_TABLE: Final = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY CHECK (version > 0),
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(Exception):
    """A migration is malformed, failed to apply, or was changed after it was applied."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One SQL file: `version` from its name, `checksum` the sha256 of its bytes."""

    version: int
    name: str  #: the file name without `.sql`, e.g. "0001_initial"
    sql: str = field(repr=False)
    checksum: str


def _parse(file_name: str, data: bytes) -> Migration:
    match = _FILE_NAME.match(file_name)
    if match is None:
        raise MigrationError(
            f"bad migration file name {file_name!r}: expected NNNN_snake_case_name.sql"
        )
    version = int(match["version"])
    if version == 0:
        raise MigrationError(f"bad migration file name {file_name!r}: versions start at 0001")
    try:
        sql = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MigrationError(f"migration {file_name!r} is not UTF-8: {exc}") from None
    name = file_name.removesuffix(".sql")
    return Migration(version, name, sql, hashlib.sha256(data).hexdigest())


def load_migrations(directory: Traversable | None = None) -> list[Migration]:
    """The migrations in `directory` (default: the packaged ones), sorted by version.

    Every `.sql` file must be named `NNNN_name.sql`; other files are ignored.
    Raises MigrationError on a bad name, a non-UTF-8 file or a repeated version.
    """
    source = directory or files("lumiku_bgremover.db") / "migrations"
    found = [
        _parse(entry.name, entry.read_bytes())
        for entry in source.iterdir()
        if entry.name.endswith(".sql") and entry.is_file()
    ]
    found.sort(key=lambda m: (m.version, m.name))
    for before, after in itertools.pairwise(found):
        if before.version == after.version:
            raise MigrationError(
                f"duplicate migration version {after.version:04d}: {before.name}, {after.name}"
            )
    return found


async def _applied(conn: Conn) -> dict[int, asyncpg.Record]:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return {}
    rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
    return {row["version"]: row for row in rows}


def _check_drift(applied: dict[int, asyncpg.Record], migrations: Iterable[Migration]) -> None:
    for migration in migrations:
        row = applied.get(migration.version)
        if row is None:
            continue
        if row["checksum"] != migration.checksum or row["name"] != migration.name:
            raise MigrationError(
                f"migration {migration.name} was changed after it was applied "
                f"(recorded as {row['name']} with sha256 {row['checksum']}, "
                f"the file has sha256 {migration.checksum}); add a new migration instead"
            )


async def _pending(conn: Conn, migrations: Sequence[Migration]) -> list[Migration]:
    applied = await _applied(conn)
    _check_drift(applied, migrations)
    return [m for m in migrations if m.version not in applied]


async def pending(conn: Conn, migrations: Sequence[Migration] | None = None) -> list[str]:
    """Names of the migrations not yet applied, in order (no lock taken, nothing written).

    Raises MigrationError when an applied migration's file has changed.
    """
    todo = await _pending(conn, load_migrations() if migrations is None else migrations)
    return [m.name for m in todo]


async def _apply(conn: Conn, migration: Migration) -> None:
    try:
        async with conn.transaction():
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )
    except asyncpg.PostgresError as exc:
        raise MigrationError(f"migration {migration.name} failed: {exc}") from exc


async def migrate(conn: Conn, migrations: Sequence[Migration] | None = None) -> list[str]:
    """Apply the pending migrations in order; return the names newly applied.

    Holds a session advisory lock meanwhile, so concurrent callers apply each migration
    exactly once (the others wait, then find nothing to do). Running it again is a no-op.
    Raises MigrationError when a migration fails (it is rolled back and not recorded)
    or an applied migration's file has changed.
    """
    todo_from = load_migrations() if migrations is None else migrations
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await conn.execute(_CREATE_TABLE)
        todo = await _pending(conn, todo_from)
        for migration in todo:
            await _apply(conn, migration)
        return [m.name for m in todo]
    finally:
        if not conn.is_closed():
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
