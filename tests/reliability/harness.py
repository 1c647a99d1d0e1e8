"""Real processes the reliability tests kill, pause and restart.

NATS (`nats-server -js`, file store, a fixed port so a restart comes back at the
same address), PostgreSQL (a private pgserver cluster, stopped and started with
`pg_ctl`), an S3 API server (moto's server as a child process, so SIGSTOP pauses
it) and the service itself (`lumiku-bgremover run`). Waiting is always for a
state with a deadline (`eventually`); sleeping only holds an outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fixtures._common import free_port, port_open

START_S = 30.0


async def eventually(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool], timeout_s: float, what: str
) -> None:
    """Poll `check` every 0.1 s until it holds; AssertionError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        outcome = check()
        if isinstance(outcome, Awaitable):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        await asyncio.sleep(0.1)


@dataclass
class Proc:
    """A child process with its log; killable, pausable, restartable."""

    args: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT, env=self.env
            )

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: int) -> None:
        assert self.process is not None
        os.kill(self.process.pid, sig)

    def kill(self) -> None:
        if self.alive:
            assert self.process is not None
            self.process.kill()
            self.process.wait(10)

    def stop(self, timeout_s: float = 10.0) -> int:
        """SIGTERM, then SIGKILL after `timeout_s`; the exit code."""
        assert self.process is not None
        if self.alive:
            self.signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def nats_binary() -> str:
    beside = Path(sys.executable).parent / "nats-server"
    return str(beside) if beside.is_file() else "nats-server"


#: JetStream as production runs it (NATS-NOTES.md, "Durability"): every write is fsynced
#: before it is acknowledged, so a killed server keeps what it acknowledged. With the
#: default (a sync every 2 minutes) a SIGKILL may drop acknowledged events.
DURABLE_JETSTREAM = "jetstream {{ store_dir: {store}, sync_interval: always }}\n"


class NatsNode:
    """One nats-server with durable JetStream on a fixed loopback port."""

    replicas = 1  #: what its streams can be provisioned with

    def __init__(
        self, workdir: Path, *, extra: list[str] | None = None, config: str = "", port: int = 0
    ) -> None:
        self.port = port or free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        config_path = workdir / "nats.conf"
        store = json.dumps(str(workdir / "js"))
        config_path.write_text(DURABLE_JETSTREAM.format(store=store) + config)
        args = [nats_binary(), "-c", str(config_path), "-a", "127.0.0.1"]
        args += ["-p", str(self.port), *(extra or [])]
        self.proc = Proc(args, workdir / "nats.log")

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def urls(self) -> tuple[str, ...]:
        """Every server a client may be given (one here; all three of a cluster)."""
        return (self.url,)

    async def start(self) -> None:
        self.proc.start()
        await eventually(lambda: port_open("127.0.0.1", self.port), START_S, "NATS listening")

    def kill(self) -> None:
        self.proc.kill()


class MotoS3:
    """moto's S3 server as a child process (pause it with SIGSTOP)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        args = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        workdir.mkdir(parents=True, exist_ok=True)
        self.proc = Proc(args, workdir / "moto.log")

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.proc.start()
        await eventually(lambda: port_open("127.0.0.1", self.port), START_S, "moto listening")

    def pause(self) -> None:
        self.proc.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.signal(signal.SIGCONT)


class Postgres:
    """A private PostgreSQL cluster (pgserver) that tests stop and start."""

    def __init__(self, datadir: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver  # noqa: PLC0415

            self.server: Any = pgserver.get_server(datadir, cleanup_mode="stop")
        self.datadir = datadir

    def uri(self, database: str | None = None) -> str:
        return str(self.server.get_uri(database))

    def stop(self) -> None:
        from pgserver._commands import pg_ctl  # noqa: PLC0415

        args = ["-w", "-m", "fast", "stop"]
        pg_ctl(args, pgdata=self.server.pgdata, user=self.server.system_user)

    def start(self) -> None:
        self.server.ensure_postgres_running()

    def cleanup(self) -> None:
        with contextlib.suppress(Exception):
            self.server.cleanup()


class Service:
    """`lumiku-bgremover run` as a child process, ready once it logs so."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        args = [sys.executable, "-m", "lumiku_bgremover.cli", "run"]
        self.proc = Proc(args, log_path, env=env)

    async def start(self, timeout_s: float = 60.0) -> Service:
        self.proc.start()
        await eventually(self._ready, timeout_s, f"service ready ({self.proc.log_path})")
        return self

    def _ready(self) -> bool:
        if not self.proc.alive:
            raise AssertionError(f"service exited:\n{self.proc.log()[-4000:]}")
        return "lumiku-bgremover ready" in self.proc.log()


@contextlib.contextmanager
def services(*running: Service) -> Iterator[None]:
    """Kill every service on the way out, whatever happened."""
    try:
        yield
    finally:
        for service in running:
            service.proc.kill()
