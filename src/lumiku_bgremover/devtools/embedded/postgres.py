"""A private PostgreSQL server in a data directory, through `pgserver`.

`pgserver` ships the PostgreSQL binaries, runs `initdb` the first time, and starts
the server listening on a unix socket only (no TCP port to collide with). When run
as root it runs the server as a system user of its own, as PostgreSQL requires.
`stop()` asks pgserver to stop the server and then makes sure the postmaster is
gone, since pgserver keeps a server running while a stale handle (left by a process
that was killed) still names it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from lumiku_bgremover.devtools.embedded.errors import EmbeddedError

__all__ = ["PostgresServer", "start_postgres"]

#: Seconds the postmaster has to exit after a fast-shutdown request before it is killed.
STOP_TIMEOUT_S: Final = 15.0
_POLL_S: Final = 0.05


def _pgserver() -> Any:
    """The `pgserver` module (optional extra); its import warns about XDG_RUNTIME_DIR,
    and it logs every command it runs at INFO (we keep its warnings)."""
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import pgserver  # noqa: PLC0415 - optional: the `embedded` extra
        except ImportError as error:
            raise EmbeddedError(
                "pgserver is not installed: install the `embedded` extra "
                "(pip install 'lumiku-bgremover[embedded]')"
            ) from error
    return pgserver


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(_POLL_S)
    return True


def _end_postmaster(pid: int) -> None:
    """Fast shutdown (SIGINT: sessions are ended), then SIGKILL if it hangs."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGINT)
        if not _wait_gone(pid, STOP_TIMEOUT_S):
            os.kill(pid, signal.SIGKILL)
            _wait_gone(pid, STOP_TIMEOUT_S)


@dataclass(slots=True)
class PostgresServer:
    """A running private PostgreSQL: its URL, data directory and postmaster pid."""

    url: str
    data_dir: Path
    pid: int
    _handle: Any = field(repr=False)

    @property
    def log_file(self) -> Path:
        """The server's log (pgserver writes it inside the data directory)."""
        return self.data_dir / "log"

    def stop(self) -> None:
        """Stop the server (blocking, idempotent); the postmaster is gone afterwards."""
        with contextlib.suppress(Exception):  # pgserver's own stop; ours below is the backstop
            self._handle.cleanup()
        if _alive(self.pid):
            _end_postmaster(self.pid)


def _start_sync(data_dir: Path) -> PostgresServer:
    pgserver = _pgserver()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        handle = pgserver.get_server(data_dir, cleanup_mode="stop")
        url, pid = handle.get_uri(), handle.get_pid()
    except Exception as error:
        log = data_dir / "log"
        tail = log.read_text(errors="replace")[-2000:] if log.is_file() else "(no log)"
        raise EmbeddedError(f"cannot start PostgreSQL in {data_dir}: {error!r}\n{tail}") from error
    return PostgresServer(str(url), data_dir.resolve(), int(pid), handle)


async def start_postgres(data_dir: Path) -> PostgresServer:
    """Start (or reuse) the server of `data_dir`, initialising it the first time."""
    return await asyncio.to_thread(_start_sync, data_dir)
