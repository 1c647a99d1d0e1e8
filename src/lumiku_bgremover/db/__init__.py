"""PostgreSQL: connection pool, codecs and the packaged SQL migrations."""

from lumiku_bgremover.db.migrate import (
    MIGRATION_LOCK_KEY,
    Migration,
    MigrationError,
    load_migrations,
    migrate,
    pending,
)
from lumiku_bgremover.db.pool import connect, create_pool, init_connection

__all__ = [
    "MIGRATION_LOCK_KEY",
    "Migration",
    "MigrationError",
    "connect",
    "create_pool",
    "init_connection",
    "load_migrations",
    "migrate",
    "pending",
]
