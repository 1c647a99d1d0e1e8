"""A small scripted HTTP server on 127.0.0.1 (stdlib, one thread per request).

`FakeServer` routes each request to a handler that returns a `Reply`; faults queued
with `push` answer the next requests instead, in order, so a test (or the demo)
can script "two 503s, then fine"; a rule set with `always` answers every request it
matches with its fault (a "poisoned" image), whatever the queue holds. Every request
is recorded. Slow replies wait on
an event that `stop` sets, so stopping never hangs on a slow answer.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Final, Self
from urllib.parse import parse_qs, urlsplit

__all__ = ["FakeServer", "Fault", "Matcher", "Recorded", "Reply"]

_JSON: Final = "application/json"


@dataclass(frozen=True, slots=True)
class Reply:
    """One HTTP answer."""

    status: int = 200
    body: bytes = b""
    content_type: str = _JSON
    headers: tuple[tuple[str, str], ...] = ()
    delay_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Recorded:
    """One request as the server saw it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  #: names lower-cased
    body: bytes


@dataclass(frozen=True, slots=True)
class Fault:
    """A provider-neutral failure; each fake server answers it as its provider documents.

    `kind`: "status" (answer `status` with the provider's error body), "loading"
    (model loading, `seconds` to wait), "rate_limited" (`seconds` until allowed),
    "slow" (answer normally after `seconds`), "garbage" (200 with an unusable body),
    "credits" (out of credits), and 200 answers a client cannot use: "wrong_shape"
    (JSON, but not the documented shape), "bad_base64" (the image field is not
    base64), "not_a_mask" (a colour image with no alpha where a matte belongs).
    """

    kind: str
    status: int = 0
    seconds: float = 0.0

    @classmethod
    def http(cls, status: int) -> Fault:
        """Answer with `status` and the provider's error body for it."""
        return cls("status", status=status)


Handler = Callable[[Recorded], Reply]
#: Whether a rule applies to a request.
Matcher = Callable[[Recorded], bool]
FaultReply = Callable[[Fault, Recorded], Reply]


@dataclass
class _Script:
    faults: collections.deque[Fault] = field(default_factory=collections.deque)
    rules: list[tuple[Matcher, Fault]] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class FakeServer:
    """Serves `handler` on 127.0.0.1 (a free port) in a background thread."""

    def __init__(self, handler: Handler, fault_reply: FaultReply) -> None:
        self._handler, self._fault_reply = handler, fault_reply
        self._script = _Script()
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._request_class())
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        """The base URL, `http://127.0.0.1:<port>`."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def requests(self) -> list[Recorded]:
        """The requests served so far (a copy)."""
        with self._script.lock:
            return list(self._script.requests)

    def push(self, *faults: Fault) -> None:
        """Answer the next requests with `faults`, one each, in order."""
        with self._script.lock:
            self._script.faults.extend(faults)

    def always(self, matches: Matcher, fault: Fault) -> None:
        """Answer every request that `matches` with `fault`, before any queued one."""
        with self._script.lock:
            self._script.rules.append((matches, fault))

    def start(self) -> Self:
        """Start serving; returns self."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port (slow answers are cut short)."""
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def answer(self, request: Recorded) -> Reply:
        """The reply to `request`: the next queued fault's, else the handler's."""
        with self._script.lock:
            self._script.requests.append(request)
            rules = list(self._script.rules)
        fault = next((fault for matches, fault in rules if matches(request)), None)
        if fault is None:
            with self._script.lock:
                fault = self._script.faults.popleft() if self._script.faults else None
        if fault is None:
            return self._handler(request)
        reply = self._fault_reply(fault, request)
        if fault.kind == "slow":
            normal = self._handler(request)
            return Reply(normal.status, normal.body, normal.content_type, normal.headers,
                         delay_s=fault.seconds)  # fmt: skip
        return reply

    def wait(self, seconds: float) -> None:
        """Sleep `seconds` in a request thread, or less when the server stops."""
        self._stopping.wait(seconds)

    def _request_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class _Request(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self._serve()

            def do_POST(self) -> None:
                self._serve()

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                del format, args

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                parts = urlsplit(self.path)
                recorded = Recorded(
                    method=self.command, path=parts.path, query=parse_qs(parts.query),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self.rfile.read(length) if length else b"",
                )  # fmt: skip
                reply = server.answer(recorded)
                if reply.delay_s > 0:
                    server.wait(reply.delay_s)
                self._write(reply)

            def _write(self, reply: Reply) -> None:
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", reply.content_type)
                    self.send_header("Content-Length", str(len(reply.body)))
                    for name, value in reply.headers:
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test): nothing to tell it

        return _Request
