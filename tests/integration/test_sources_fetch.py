"""`UrlFetcher` against real local HTTPS servers, and `SourceLoader` over a real S3 server.

The servers are asyncio TLS servers on loopback addresses with a throw-away CA
(`trustme`). "Public" is simulated by a policy that allows exactly one loopback
address, 127.0.0.2; 127.0.0.1 plays the private network behind it. No outside
network is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import pytest
import pytest_asyncio
import trustme

from lumiku_bgremover.contracts.codes import FailCode
from lumiku_bgremover.contracts.common import ImageRef
from lumiku_bgremover.settings import S3Settings
from lumiku_bgremover.sources import (
    FetchFailed,
    FetchPolicy,
    ForbiddenSource,
    SourceLoader,
    SourceNotFound,
    SourceTooLarge,
    UrlFetcher,
)
from lumiku_bgremover.storage import S3ObjectStore

pytestmark = pytest.mark.integration

PUBLIC_IP = "127.0.0.2"  #: the one address the test policy treats as public
PRIVATE_IP = "127.0.0.1"
MIB = 1024 * 1024
IMAGE = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
NAMES = {
    "images.test": [PUBLIC_IP],
    "private.test": [PRIVATE_IP],
    "mixed.test": [PUBLIC_IP, PRIVATE_IP],
}

Route = Callable[[asyncio.StreamWriter, "Server"], Awaitable[None]]
MakeServer = Callable[..., Awaitable["Server"]]
Buckets = tuple[S3ObjectStore, S3ObjectStore, S3ObjectStore]


@dataclass
class Server:
    """An HTTPS server on one loopback address answering each path with a scripted route."""

    host: str
    tls: ssl.SSLContext
    routes: dict[str, Route]
    requests: list[tuple[str, str]] = field(default_factory=list)  #: (path, Host header)
    connections: int = 0
    sent: int = 0  #: body bytes written and drained by streaming routes
    sni: list[str | None] = field(default_factory=list)
    port: int = 0
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _server: asyncio.Server | None = None

    def url(self, path: str, host: str | None = None) -> str:
        return f"https://{host or self.host}:{self.port}{path}"

    async def start(self) -> None:
        def on_sni(sock: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
            self.sni.append(name)

        self.tls.sni_callback = on_sni
        self._server = await asyncio.start_server(self._handle, self.host, 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            while await self._one_request(reader, writer):
                pass
        except (
            ConnectionError,
            ssl.SSLError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        path = head[0].split(" ")[1]
        headers = dict(line.split(": ", 1) for line in head[1:] if ": " in line)
        self.requests.append((path, headers.get("host", headers.get("Host", ""))))
        await self.routes.get(path, status(404))(writer, self)
        await writer.drain()
        return not writer.is_closing()


def ok(body: bytes = IMAGE) -> Route:
    async def route(writer: asyncio.StreamWriter, server: Server) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )

    return route


def status(code: int, extra: str = "") -> Route:
    async def route(writer: asyncio.StreamWriter, server: Server) -> None:
        writer.write(f"HTTP/1.1 {code} X\r\n{extra}Content-Length: 0\r\n\r\n".encode())

    return route


def redirect(location: str, code: int = 302) -> Route:
    return status(code, f"Location: {location}\r\n")


def stream(total: int, *, framing: str, declared: int | None = None) -> Route:
    """`total` bytes in 64 KiB writes, each counted once drained: `framing` is
    "length" (Content-Length: `declared` or `total`), "chunked" or "close"."""

    async def route(writer: asyncio.StreamWriter, server: Server) -> None:
        head = "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n"
        if framing == "length":
            head += f"Content-Length: {declared if declared is not None else total}\r\n"
        elif framing == "chunked":
            head += "Transfer-Encoding: chunked\r\n"
        else:
            head += "Connection: close\r\n"
        writer.write(head.encode() + b"\r\n")
        block = b"\0" * (64 * 1024)
        while server.sent < total and not writer.is_closing():
            frame = b"%x\r\n%b\r\n" % (len(block), block) if framing == "chunked" else block
            writer.write(frame)
            await writer.drain()
            server.sent += len(block)
        writer.close()

    return route


def stall(after_headers: bool, every_s: float = 0.0) -> Route:
    """Send nothing (or only the headers), then wait; with `every_s`, trickle one byte."""

    async def route(writer: asyncio.StreamWriter, server: Server) -> None:
        if after_headers:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
            await writer.drain()
        while True:
            await asyncio.sleep(every_s or 30)
            writer.write(b"x")
            await writer.drain()

    return route


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_tls(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    return context


@pytest.fixture
def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest_asyncio.fixture
async def servers(ca: trustme.CA) -> AsyncIterator[Callable[..., Awaitable[Server]]]:
    started: list[Server] = []

    async def make(host: str, routes: dict[str, Route], *names: str) -> Server:
        server = Server(host, server_tls(ca, *(names or (host,))), routes)
        await server.start()
        started.append(server)
        return server

    yield make
    for server in started:
        await server.stop()


async def fake_dns(host: str, port: int) -> Sequence[str]:
    if host not in NAMES:
        raise OSError(f"unknown host {host}")
    return NAMES[host]


def policy_for(*servers: Server, **timeouts: float) -> FetchPolicy:
    """Allows only 127.0.0.2 (our "public" address) on the servers' ports."""
    public = ipaddress.ip_address(PUBLIC_IP)
    return FetchPolicy(
        allowed_ports=frozenset(s.port for s in servers),
        address_allowed=lambda ip: ip == public,
        **timeouts,  # type: ignore[arg-type]
    )


@contextlib.asynccontextmanager
async def fetcher_for(policy: FetchPolicy, client_tls: ssl.SSLContext) -> AsyncIterator[UrlFetcher]:
    async with UrlFetcher(policy=policy, resolver=fake_dns, ssl_context=client_tls) as fetcher:
        yield fetcher


# --- fetching ---------------------------------------------------------------------------


async def test_fetches_an_image_from_an_allowed_server(
    servers: MakeServer, client_tls: ssl.SSLContext
) -> None:
    public = await servers(PUBLIC_IP, {"/a.png": ok()}, "images.test", PUBLIC_IP)
    async with fetcher_for(policy_for(public), client_tls) as fetcher:
        assert await fetcher.fetch(public.url("/a.png"), max_bytes=MIB) == IMAGE
        assert await fetcher.fetch(public.url("/a.png", "images.test"), max_bytes=MIB) == IMAGE
    assert [host for _, host in public.requests] == [
        f"{PUBLIC_IP}:{public.port}",
        f"images.test:{public.port}",
    ]


async def test_tls_uses_the_host_name_while_connecting_to_the_checked_ip(
    servers: MakeServer, client_tls: ssl.SSLContext
) -> None:
    public = await servers(PUBLIC_IP, {"/a.png": ok()}, "images.test")  # no IP in the cert
    async with fetcher_for(policy_for(public), client_tls) as fetcher:
        assert await fetcher.fetch(public.url("/a.png", "images.test"), max_bytes=MIB) == IMAGE
        with pytest.raises(FetchFailed):  # by IP, the name-only certificate does not match
            await fetcher.fetch(public.url("/a.png"), max_bytes=MIB)
    assert public.sni[0] == "images.test"


async def test_the_default_policy_refuses_the_same_server(
    servers: MakeServer, client_tls: ssl.SSLContext
) -> None:
    public = await servers(PUBLIC_IP, {"/a.png": ok()}, "images.test", PUBLIC_IP)
    async with fetcher_for(FetchPolicy(), client_tls) as fetcher:
        with pytest.raises(ForbiddenSource):
            await fetcher.fetch(public.url("/a.png"), max_bytes=MIB)
    default_addresses = FetchPolicy(allowed_ports=frozenset({public.port}))
    async with fetcher_for(default_addresses, client_tls) as fetcher:
        with pytest.raises(ForbiddenSource):  # the literal, refused by check_url
            await fetcher.fetch(public.url("/a.png"), max_bytes=MIB)
        with pytest.raises(ForbiddenSource) as caught:  # the name, refused at connect time
            await fetcher.fetch(public.url("/a.png", "images.test"), max_bytes=MIB)
    assert caught.value.code is FailCode.FORBIDDEN_SOURCE
    assert public.connections == 0


async def test_a_name_with_any_private_address_is_refused(
    servers: MakeServer, client_tls: ssl.SSLContext
) -> None:
    public = await servers(PUBLIC_IP, {"/a.png": ok()}, "mixed.test", "private.test")
    async with fetcher_for(policy_for(public), client_tls) as fetcher:
        for name in ["mixed.test", "private.test"]:
            with pytest.raises(ForbiddenSource):
                await fetcher.fetch(public.url("/a.png", name), max_bytes=MIB)
        with pytest.raises(FetchFailed):  # an unknown name is a fetch failure
            await fetcher.fetch(public.url("/a.png", "unknown.test"), max_bytes=MIB)
    assert public.connections == 0


@pytest.mark.parametrize(
    "target",
    [
        "http://{private}:{port}/secret",
        "https://{private}:{port}/secret",
        "https://private.test:{port}/secret",
        "https://mixed.test:{port}/secret",
        "https://localhost:{port}/secret",
        "https://[::ffff:{private}]:{port}/secret",
    ],
)
async def test_a_redirect_to_a_private_host_is_refused(
    servers: MakeServer, client_tls: ssl.SSLContext, target: str
) -> None:
    private = await servers(PRIVATE_IP, {"/secret": ok(b"secret")}, "private.test", PRIVATE_IP)
    location = target.format(private=PRIVATE_IP, port=private.port)
    public = await servers(PUBLIC_IP, {"/start": redirect(location)}, PUBLIC_IP)
    async with fetcher_for(policy_for(public, private), client_tls) as fetcher:
        with pytest.raises(ForbiddenSource):
            await fetcher.fetch(public.url("/start"), max_bytes=MIB)
    assert [path for path, _ in public.requests] == ["/start"]
    assert private.connections == 0


async def test_redirects_between_allowed_urls_are_followed(
    servers: MakeServer, client_tls: ssl.SSLContext
) -> None:
    routes: dict[str, Route] = {"/a.png": ok()}
    public = await servers(PUBLIC_IP, routes, "images.test", PUBLIC_IP)
    routes |= {
        "/1": redirect("/2", 301),
        "/2": redirect(public.url("/3", "images.test"), 307),
        "/3": redirect("/a.png", 308),
        "/0": redirect("/1", 303),
    }
    async with fetcher_for(policy_for(public), client_tls) as fetcher:
        assert await fetcher.fetch(public.url("/1"), max_bytes=MIB) == IMAGE
        with pytest.raises(FetchFailed, match="redirects"):
            await fetcher.fetch(public.url("/0"), max_bytes=MIB)


@pytest.mark.parametrize(
    ("framing", "declared"),
    [("length", None), ("chunked", None), ("close", None), ("length", 200 * MIB)],
    ids=["honest-length", "chunked", "close-delimited", "huge-length"],
)
async def test_a_body_over_the_cap_is_cut_short(
    servers: MakeServer, client_tls: ssl.SSLContext, framing: str, declared: int | None
) -> None:
    total = 64 * MIB
    public = await servers(PUBLIC_IP, {"/big": stream(total, framing=framing, declared=declared)})
    async with fetcher_for(policy_for(public), client_tls) as fetcher:
        with pytest.raises(SourceTooLarge) as caught:
            await fetcher.fetch(public.url("/big"), max_bytes=256 * 1024)
    assert caught.value.code is FailCode.SOURCE_TOO_LARGE
    for _ in range(100):  # the client hung up: the server's handler ends
        if not public._tasks:
            break
        await asyncio.sleep(0.02)
    assert not public._tasks, "the fetcher kept the connection open"
    assert public.sent < 16 * MIB, public.sent  # about 4.3 MiB here: socket buffers


async def test_a_body_at_the_cap_is_accepted(
    servers: MakeServer, client_tls: ssl.SSLContext
) -> None:
    body = bytes(range(256)) * 1024  # 256 KiB
    public = await servers(PUBLIC_IP, {"/x": ok(body)})
    async with fetcher_for(policy_for(public), client_tls) as fetcher:
        assert await fetcher.fetch(public.url("/x"), max_bytes=len(body)) == body
        with pytest.raises(SourceTooLarge):
            await fetcher.fetch(public.url("/x"), max_bytes=len(body) - 1)


async def test_a_truncated_body_is_a_fetch_failure(
    servers: MakeServer, client_tls: ssl.SSLContext
) -> None:
    public = await servers(PUBLIC_IP, {"/cut": stream(64 * 1024, framing="length", declared=MIB)})
    async with fetcher_for(policy_for(public), client_tls) as fetcher:
        with pytest.raises(FetchFailed):
            await fetcher.fetch(public.url("/cut"), max_bytes=2 * MIB)


@pytest.mark.parametrize(
    ("route", "timeouts", "limit"),
    [
        (stall(after_headers=False), {"read_timeout_s": 0.3}, 2.0),
        (stall(after_headers=True), {"read_timeout_s": 0.3}, 2.0),
        (
            stall(after_headers=True, every_s=0.05),
            {"read_timeout_s": 1.0, "total_timeout_s": 0.6},
            3.0,
        ),
    ],
    ids=["no-answer", "stalled-body", "trickle-past-the-total"],
)
async def test_a_slow_server_times_out(
    servers: MakeServer,
    client_tls: ssl.SSLContext,
    route: Route,
    timeouts: dict[str, float],
    limit: float,
) -> None:
    public = await servers(PUBLIC_IP, {"/slow": route})
    async with fetcher_for(policy_for(public, **timeouts), client_tls) as fetcher:
        with pytest.raises(FetchFailed) as caught:
            async with asyncio.timeout(limit):  # a missing timeout fails here, not hangs
                await fetcher.fetch(public.url("/slow"), max_bytes=MIB)
    assert caught.value.code is FailCode.FETCH_FAILED


@pytest.mark.parametrize(
    ("code", "error"),
    [(404, SourceNotFound), (410, SourceNotFound), (500, FetchFailed), (403, FetchFailed)],
)
async def test_error_statuses(
    servers: MakeServer, client_tls: ssl.SSLContext, code: int, error: type[Exception]
) -> None:
    public = await servers(PUBLIC_IP, {"/x": status(code)})
    async with fetcher_for(policy_for(public), client_tls) as fetcher:
        with pytest.raises(error):
            await fetcher.fetch(public.url("/x"), max_bytes=MIB)


async def test_an_untrusted_certificate_is_a_fetch_failure(servers: MakeServer) -> None:
    public = await servers(PUBLIC_IP, {"/a.png": ok()})
    async with UrlFetcher(policy=policy_for(public), resolver=fake_dns) as fetcher:  # certifi CAs
        with pytest.raises(FetchFailed):
            await fetcher.fetch(public.url("/a.png"), max_bytes=MIB)


# --- SourceLoader over a real S3 server ---------------------------------------------------


@pytest_asyncio.fixture
async def buckets(
    make_s3_settings: Callable[..., Awaitable[S3Settings]],
) -> Buckets:
    """(our store allow-listing `shared`, the `shared` store, an unlisted `other` store)."""
    shared = S3ObjectStore.from_settings(await make_s3_settings())
    other = S3ObjectStore.from_settings(await make_s3_settings())
    ours = S3ObjectStore.from_settings(await make_s3_settings(allowed_buckets=(shared.bucket,)))
    return ours, shared, other


def obj(store: S3ObjectStore, key: str) -> ImageRef:
    return ImageRef(bucket=store.bucket, key=key)


async def test_loader_reads_object_refs_under_the_rules(
    buckets: Buckets, client_tls: ssl.SSLContext
) -> None:
    ours, shared, other = buckets
    await ours.put_bytes("originals/u1/a.png", IMAGE, "image/png")
    await ours.put_bytes("originals/u2/b.png", IMAGE, "image/png")
    await shared.put_bytes("exports/c.png", IMAGE, "image/png")
    await other.put_bytes("originals/u1/d.png", IMAGE, "image/png")
    async with UrlFetcher() as fetcher:
        loader = SourceLoader(ours, fetcher, max_bytes=MIB, allowed_buckets=[shared.bucket])
        assert await loader.load(obj(ours, "originals/u1/a.png"), "u1") == IMAGE
        assert await loader.size(obj(ours, "originals/u1/a.png"), "u1") == len(IMAGE)
        assert await loader.load(obj(shared, "exports/c.png"), "u1") == IMAGE
        assert await loader.size(obj(shared, "exports/c.png"), "u1") == len(IMAGE)
        for forbidden in [obj(ours, "originals/u2/b.png"), obj(other, "originals/u1/d.png")]:
            with pytest.raises(ForbiddenSource):
                await loader.load(forbidden, "u1")
            with pytest.raises(ForbiddenSource):
                await loader.size(forbidden, "u1")


async def test_loader_maps_store_errors(buckets: Buckets) -> None:
    ours, _, other = buckets
    await ours.put_bytes("originals/u1/big.png", b"x" * 1001, "image/png")
    async with UrlFetcher() as fetcher:
        loader = SourceLoader(ours, fetcher, max_bytes=1000)
        with pytest.raises(SourceNotFound) as missing:
            await loader.load(obj(ours, "originals/u1/missing.png"), "u1")
        assert missing.value.code is FailCode.SOURCE_NOT_FOUND
        with pytest.raises(SourceNotFound):
            await loader.size(obj(ours, "originals/u1/missing.png"), "u1")
        with pytest.raises(SourceTooLarge) as large:
            await loader.load(obj(ours, "originals/u1/big.png"), "u1")
        assert large.value.code is FailCode.SOURCE_TOO_LARGE
        assert len(await SourceLoader(ours, fetcher, max_bytes=1001).load(
            obj(ours, "originals/u1/big.png"), "u1"
        )) == 1001  # fmt: skip
        # listed by the loader but not by the store: the store's refusal is forbidden_source
        unlisted = SourceLoader(ours, fetcher, max_bytes=1000, allowed_buckets=[other.bucket])
        with pytest.raises(ForbiddenSource):
            await unlisted.load(obj(other, "x.png"), "u1")


async def test_loader_fetches_urls_with_its_fetcher(
    buckets: Buckets, servers: MakeServer, client_tls: ssl.SSLContext
) -> None:
    ours, _, _ = buckets
    public = await servers(PUBLIC_IP, {"/a.png": ok()}, "images.test", PUBLIC_IP)
    async with fetcher_for(policy_for(public), client_tls) as fetcher:
        loader = SourceLoader(ours, fetcher, max_bytes=MIB)
        ref = ImageRef(url=public.url("/a.png", "images.test"))
        assert await loader.load(ref, "u1") == IMAGE
        assert await loader.size(ref, "u1") is None
        with pytest.raises(SourceTooLarge):
            await SourceLoader(ours, fetcher, max_bytes=10).load(ref, "u1")
        hostile = ImageRef(url=f"https://{PRIVATE_IP}:{public.port}/a.png")
        with pytest.raises(ForbiddenSource):
            loader.check(hostile, "u1")
        with pytest.raises(ForbiddenSource):
            await loader.size(hostile, "u1")
