"""The embedded stack: private NATS, private PostgreSQL and a local object store in
one working directory, with settings and environment lines that point at them."""

from __future__ import annotations

import contextlib
import logging
import shlex
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

from lumiku_bgremover import db
from lumiku_bgremover.contracts.common import Tier
from lumiku_bgremover.devtools.embedded.nats import NatsServer, start_nats
from lumiku_bgremover.devtools.embedded.postgres import PostgresServer, start_postgres
from lumiku_bgremover.settings import (
    DatabaseSettings,
    NatsSettings,
    Route,
    Settings,
    StorageSettings,
)

__all__ = [
    "EmbeddedStack",
    "embedded_stack",
    "environment",
    "export_lines",
    "routes_to",
    "stack_settings",
    "workspace",
]

log = logging.getLogger(__name__)

#: Sub-directories of the working directory.
NATS_DIR: Final = "nats"
POSTGRES_DIR: Final = "postgres"
STORAGE_DIR: Final = "storage"


@dataclass(frozen=True, slots=True)
class EmbeddedStack:
    """The running private servers and where everything lives."""

    workdir: Path
    nats: NatsServer
    postgres: PostgresServer
    migrations: tuple[str, ...]

    @property
    def nats_url(self) -> str:
        """`nats://127.0.0.1:<port>` of the private nats-server."""
        return self.nats.url

    @property
    def database_url(self) -> str:
        """`postgresql://...?host=<socket dir>` of the private PostgreSQL."""
        return self.postgres.url

    @property
    def storage_dir(self) -> Path:
        """Root of the local object store."""
        return self.workdir / STORAGE_DIR


@contextlib.contextmanager
def workspace(given: Path | None, *, prefix: str = "lumiku-") -> Iterator[Path]:
    """`given` (created if missing, kept), or a temporary directory removed on exit."""
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
        yield given.resolve()
        return
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.asynccontextmanager
async def embedded_stack(workdir: Path) -> AsyncIterator[EmbeddedStack]:
    """Start nats-server and PostgreSQL under `workdir`, migrate; stop both on exit.

    Leaving the block in any way (an error, cancellation by Ctrl-C or SIGTERM) stops
    both servers before the exception goes on; `workdir` itself is kept.
    """
    with contextlib.ExitStack() as cleanup:
        nats_server = await start_nats(workdir / NATS_DIR)
        cleanup.callback(nats_server.stop)
        postgres = await start_postgres(workdir / POSTGRES_DIR)
        cleanup.callback(postgres.stop)
        (workdir / STORAGE_DIR).mkdir(parents=True, exist_ok=True)
        async with db.connect(postgres.url) as conn:
            applied = await db.migrate(conn)
        log.debug("embedded stack up in %s (nats pid %d, postgres pid %d)",
                 workdir, nats_server.pid, postgres.pid)  # fmt: skip
        yield EmbeddedStack(workdir, nats_server, postgres, tuple(applied))


def routes_to(engine: str, model: str) -> dict[Tier, Route]:
    """Every tier routed to one engine and model."""
    return {tier: Route(engine=engine, model=model) for tier in Tier}


def stack_settings(stack: EmbeddedStack, base: Settings, routes: Mapping[Tier, Route]) -> Settings:
    """`base` pointed at the stack: its NATS and database, the local store unless
    `base` names an S3 endpoint, and `routes` for every tier. The in-process service
    serves no metrics port (a taken 9090 must not stop a demo)."""
    storage = base.storage
    if storage.backend != "s3" or storage.s3 is None:
        storage = StorageSettings(backend="local", s3=storage.s3, local_dir=stack.storage_dir)
    return replace(
        base,
        nats=NatsSettings(servers=(stack.nats_url,)),
        database=DatabaseSettings(url=stack.database_url, pool_min=1, pool_max=4),
        storage=storage,
        engines=replace(base.engines, routes=dict(routes)),
        observability=replace(base.observability, metrics_port=0),
        integrations=replace(base.integrations, provision_stream=True),
    )


def environment(settings: Settings) -> dict[str, str]:
    """The variables that point `lumiku-bgremover` (any command) where `settings` do:
    NATS, database, the local store (an S3 store is configured by the caller's own
    variables) and the tier routing."""
    routes = settings.engines.routes
    variables = {
        "NATS_URL": ",".join(settings.nats.servers),
        "DATABASE_URL": settings.require_database().url,
        "INTEGRATIONS_PROVISION_STREAM": "true",
    }
    if settings.storage.backend == "local" and settings.storage.local_dir is not None:
        variables |= {
            "STORAGE_BACKEND": "local",
            "LOCAL_STORAGE_DIR": str(settings.storage.local_dir),
        }
    variables["TIER_ROUTING"] = ",".join(
        f"{tier.value}={route.engine}:{route.model}" for tier, route in routes.items()
    )
    return variables


def export_lines(variables: Mapping[str, str]) -> list[str]:
    """`export NAME=value` lines, quoted for a POSIX shell."""
    return [f"export {name}={shlex.quote(value)}" for name, value in variables.items()]
