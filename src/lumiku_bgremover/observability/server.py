"""A tiny HTTP server (asyncio streams, no framework): `/metrics`, `/livez`, `/readyz`.

It answers GET and HEAD, one request per connection, and nothing else: it exists for
Prometheus and the kubelet, not for users.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from http import HTTPStatus
from typing import Final

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from lumiku_bgremover.observability.health import Readiness

__all__ = ["HealthServer", "Response"]

#: Seconds a client may take to send its request head.
READ_TIMEOUT_S: Final = 5.0
#: Longest request head accepted.
MAX_HEAD_BYTES: Final = 8192
TEXT: Final = "text/plain; charset=utf-8"
JSON: Final = "application/json"
BAD_REQUEST: Final = b"bad request\n"

Response = tuple[HTTPStatus, str, bytes]


class HealthServer:
    """Serves the metrics of `registry` and the health of `readiness` on host:port."""

    def __init__(
        self, registry: CollectorRegistry, readiness: Readiness, *, host: str, port: int
    ) -> None:
        self._registry, self._readiness = registry, readiness
        self._host, self._port = host, port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The port listened on (the one the OS chose when 0 was asked for)."""
        assert self._server is not None, "not started"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        """Listen; `OSError` when the port is taken."""
        self._server = await asyncio.start_server(self._serve, self._host, self._port)

    async def stop(self) -> None:
        """Stop listening and close open connections."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def respond(self, method: str, path: str) -> Response:
        """The answer to one request."""
        if method not in {"GET", "HEAD"}:
            return HTTPStatus.METHOD_NOT_ALLOWED, TEXT, b"GET or HEAD only\n"
        route = path.split("?", 1)[0]
        if route == "/metrics":
            return HTTPStatus.OK, CONTENT_TYPE_LATEST, generate_latest(self._registry)
        if route == "/livez":
            return HTTPStatus.OK, TEXT, b"ok\n"
        if route == "/readyz":
            report = await self._readiness.check()
            status = HTTPStatus.OK if report.ready else HTTPStatus.SERVICE_UNAVAILABLE
            body = {"ready": report.ready, "checks": dict(report.results)}
            return status, JSON, json.dumps(body).encode() + b"\n"
        return HTTPStatus.NOT_FOUND, TEXT, b"not found\n"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_S)
            method, path = _request_line(head)
            status, kind, body = await self.respond(method, path)
            writer.write(_response(status, kind, b"" if method == "HEAD" else body, len(body)))
            await writer.drain()
        except (TimeoutError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.write(_response(HTTPStatus.BAD_REQUEST, TEXT, BAD_REQUEST, len(BAD_REQUEST)))
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def _request_line(head: bytes) -> tuple[str, str]:
    if len(head) > MAX_HEAD_BYTES:
        raise ValueError("request head too long")
    parts = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):  # noqa: PLR2004
        raise ValueError("not an HTTP request line")
    return parts[0], parts[1]


def _response(status: HTTPStatus, kind: str, body: bytes, length: int) -> bytes:
    head = (
        f"HTTP/1.1 {status.value} {status.phrase}\r\n"
        f"Content-Type: {kind}\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body
