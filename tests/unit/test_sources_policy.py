"""Table tests of the source policies, the connect-time guard and the fetcher's logic.

No network: the guard runs against a fake resolver and a recording inner backend,
and the fetcher's redirect and size logic against `httpx.MockTransport`.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator, Callable, Iterable, Sequence

import httpcore
import httpx
import pytest

from lumiku_bgremover.contracts.codes import FailCode
from lumiku_bgremover.contracts.common import ObjectRef
from lumiku_bgremover.sources import (
    DEFAULT_POLICY,
    FetchFailed,
    FetchPolicy,
    ForbiddenSource,
    GuardedNetworkBackend,
    SourceNotFound,
    SourceTooLarge,
    UrlFetcher,
    check_object_ref,
    check_url,
    is_public_address,
)

# --- is_public_address ------------------------------------------------------------------

PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "100.63.255.255",  # just below CGNAT
    "100.128.0.0",  # just above CGNAT
    "172.32.0.1",  # just above 172.16/12
    "2606:4700:4700::1111",
    "2a00:1450:4001:80b::200e",
    "::ffff:8.8.8.8",  # IPv4-mapped public
    "2002:808:808::1",  # 6to4 of 8.8.8.8
    "64:ff9b::808:808",  # NAT64 of 8.8.8.8
]

NOT_PUBLIC = [
    "0.0.0.0",
    "0.1.2.3",
    "10.0.0.1",
    "10.255.255.255",
    "100.64.0.1",  # CGNAT
    "100.127.255.254",
    "127.0.0.1",
    "127.255.255.254",
    "169.254.169.254",  # cloud metadata
    "169.254.0.1",
    "172.16.0.1",
    "172.31.255.255",
    "192.0.0.8",
    "192.0.2.1",  # TEST-NET-1
    "192.88.99.1",  # 6to4 relay anycast
    "192.168.1.1",
    "198.18.0.1",  # benchmarking
    "198.51.100.1",
    "203.0.113.1",
    "224.0.0.1",  # multicast
    "239.255.255.250",
    "240.0.0.1",  # reserved
    "255.255.255.255",
    "::",
    "::1",
    "::127.0.0.1",  # IPv4-compatible (deprecated)
    "::ffff:127.0.0.1",  # IPv4-mapped loopback
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "::ffff:0:127.0.0.1",  # SIIT translated
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "2002:c0a8:101::1",  # 6to4 of 192.168.1.1
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "64:ff9b:1::808:808",  # local-use NAT64
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    "2001:db8::1",  # documentation
    "100::1",  # discard
    "fc00::1",
    "fd12:3456::1",  # unique local
    "fe80::1",  # link local
    "fec0::1",  # site local (deprecated)
    "ff02::1",  # multicast
    "fe80::1%eth0",
    "2606:4700::1111%eth0",  # scoped: never public
    "not an address",
    "",
]


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses(address: str) -> None:
    assert is_public_address(address)
    assert is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_non_public_addresses(address: str) -> None:
    assert not is_public_address(address)


# --- check_url --------------------------------------------------------------------------

HOSTILE_URLS = [
    "http://example.com/a.png",
    "ftp://example.com/a.png",
    "file:///etc/passwd",
    "gopher://example.com/",
    "//example.com/a.png",
    "example.com/a.png",
    "",
    "https://",
    "https:///a.png",
    "https://127.0.0.1/",
    "https://127.0.0.1:443/",
    "https://[::1]/",
    "https://10.0.0.1/",
    "https://192.168.0.1/",
    "https://169.254.169.254/latest/meta-data",
    "https://100.64.0.1/",
    "https://0.0.0.0/",
    "https://[::ffff:127.0.0.1]/",
    "https://[::ffff:7f00:1]/",
    "https://[::ffff:169.254.169.254]/",
    "https://[2002:7f00:1::1]/",
    "https://[64:ff9b::7f00:1]/",
    "https://[fe80::1%25eth0]/",
    "https://[fd00::1]/",
    "https://user:pw@example.com/",
    "https://user@example.com/",
    "https://:pw@example.com/",
    "https://example.com\\@127.0.0.1/",
    "https://0x7f000001/",
    "https://0x7f.0.0.1/",
    "https://2130706433/",
    "https://017700000001/",
    "https://0177.0.0.1/",
    "https://127.1/",
    "https://127.000.000.001/",
    "https://1.2.3/",
    "https://localhost/",
    "https://LOCALHOST./",
    "https://api.localhost/",
    "https://metadata/computeMetadata/v1/",
    "https://vm./",
    "https://metadata.google.internal/computeMetadata/v1/",
    "https://METADATA.GOOGLE.INTERNAL./",
    "https://instance-data.ec2.internal/latest/meta-data/",
    "https://localhost.localdomain/",
    "https://printer.local/",
    "https://router.home.arpa/",
    "https://example.com:8443/",
    "https://example.com:80/",
    "https://example.com:22/",
    "https://exa mple.com/",
    "https://-example.com/",
    "https://example..com/",
    "https://" + "a" * 64 + ".com/",
]


@pytest.mark.parametrize("url", HOSTILE_URLS)
def test_hostile_urls_are_forbidden(url: str) -> None:
    with pytest.raises(ForbiddenSource) as caught:
        check_url(url)
    assert caught.value.code is FailCode.FORBIDDEN_SOURCE


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/a.png",
        "https://EXAMPLE.com:443/a.png?x=1#y",
        "https://images.example.co.uk/path/to/pic.jpeg",
        "https://8.8.8.8/a.png",
        "https://[2606:4700:4700::1111]/a.png",
        "https://bücher.example/a.png",  # IDN, checked as punycode
        "https://example.com./a.png",
        "https://1example.com/a.png",
    ],
)
def test_ordinary_urls_pass(url: str) -> None:
    check_url(url)


def test_a_policy_can_allow_other_ports_and_addresses() -> None:
    loopback_two = ipaddress.ip_address("127.0.0.2")
    policy = FetchPolicy(
        allowed_ports=frozenset({8443}), address_allowed=lambda ip: ip == loopback_two
    )
    check_url("https://127.0.0.2:8443/a.png", policy)
    check_url("https://images.test:8443/a.png", policy)
    for url in [
        "https://127.0.0.1:8443/",
        "https://127.0.0.2/",  # 443 is not in this policy
        "http://127.0.0.2:8443/",
        "https://8.8.8.8:8443/",
    ]:
        with pytest.raises(ForbiddenSource):
            check_url(url, policy)
    with pytest.raises(ForbiddenSource):
        check_url("https://127.0.0.2:8443/")  # the default policy


# --- check_object_ref -------------------------------------------------------------------

OWN = "lumiku-bgremover"
SHARED = "avatar-exports"


def ref(bucket: str, key: str) -> ObjectRef:
    return ObjectRef(bucket=bucket, key=key)  # not validated: Structs check on decode only


@pytest.mark.parametrize(
    ("bucket", "key"),
    [
        (OWN, "originals/u1/a.png"),
        (OWN, "originals/u1/deep/er/a b+c.png"),
        (SHARED, "anything/at/all.png"),
        (SHARED, "originals/someone-else/a.png"),
    ],
)
def test_allowed_object_refs(bucket: str, key: str) -> None:
    check_object_ref(ref(bucket, key), user_id="u1", own_bucket=OWN, allowed_buckets=[SHARED])


@pytest.mark.parametrize(
    ("bucket", "key", "user_id", "allowed"),
    [
        (OWN, "originals/u2/a.png", "u1", [SHARED]),  # another user's prefix
        (OWN, "originals/u10/a.png", "u1", [SHARED]),  # prefix of a longer user id
        (OWN, "originals/u1", "u1", [SHARED]),  # the prefix itself, no object
        (OWN, "originals/u1/", "u1", [SHARED]),
        (OWN, "Originals/u1/a.png", "u1", [SHARED]),
        (OWN, "results/u1/b/i.png", "u1", [SHARED]),
        (OWN, "archives/u1/b.zip", "u1", [SHARED]),
        (OWN, "originals/u1/../u2/a.png", "u1", [SHARED]),
        (OWN, "originals/u1/./a.png", "u1", [SHARED]),
        (OWN, "originals/u1//a.png", "u1", [SHARED]),
        (OWN, "/originals/u1/a.png", "u1", [SHARED]),
        (OWN, "originals/u1/a\\..\\b.png", "u1", [SHARED]),
        (OWN, "originals/u1/a\x00.png", "u1", [SHARED]),
        (OWN, "originals/u1/" + "x" * 1020, "u1", [SHARED]),
        (OWN, "originals/*/a.png", "*", [SHARED]),  # a user id that is a wildcard
        (OWN, "originals/u1/x/a.png", "u1/x", [SHARED]),  # a user id with a slash
        (OWN, "originals//a.png", "", [SHARED]),
        (OWN, "originals/u2/a.png", "u1", [OWN]),  # own bucket listed: prefix still applies
        ("other-bucket", "originals/u1/a.png", "u1", [SHARED]),
        ("Avatar-Exports", "a.png", "u1", [SHARED]),
        ("avatar-exports.", "a.png", "u1", [SHARED]),
        ("a..b", "a.png", "u1", ["a..b"]),  # an invalid name is refused even when listed
        (SHARED, "../escape.png", "u1", [SHARED]),
        (SHARED, "", "u1", [SHARED]),
    ],
)
def test_forbidden_object_refs(bucket: str, key: str, user_id: str, allowed: list[str]) -> None:
    with pytest.raises(ForbiddenSource):
        check_object_ref(ref(bucket, key), user_id=user_id, own_bucket=OWN, allowed_buckets=allowed)


# --- the connect-time guard -------------------------------------------------------------


class RecordingBackend(httpcore.AsyncNetworkBackend):
    """Records where it was asked to connect; fails for the hosts in `refuse`."""

    def __init__(self, refuse: Iterable[str] = ()) -> None:
        self.connected: list[tuple[str, int]] = []
        self.refuse = set(refuse)

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.connected.append((host, port))
        if host in self.refuse:
            raise httpcore.ConnectError(f"refused {host}")
        return httpcore.AsyncMockStream([])

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def resolver_of(table: dict[str, list[str]]) -> Callable[[str, int], AsyncIterator[str]]:
    calls: list[str] = []

    async def resolve(host: str, port: int) -> Sequence[str]:
        calls.append(host)
        return table[host]

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve  # type: ignore[return-value]


def guard(table: dict[str, list[str]], inner: RecordingBackend) -> GuardedNetworkBackend:
    return GuardedNetworkBackend(resolver=resolver_of(table), inner=inner)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "addresses",
    [
        ["10.0.0.1"],
        ["127.0.0.1"],
        ["169.254.169.254"],
        ["::1"],
        ["::ffff:127.0.0.1"],
        ["fe80::1%eth0"],
        ["93.184.216.34", "10.0.0.1"],  # one bad address taints the name
        ["10.0.0.1", "93.184.216.34"],
        ["not-an-ip"],
    ],
)
async def test_a_name_resolving_to_a_forbidden_address_is_refused(addresses: list[str]) -> None:
    inner = RecordingBackend()
    with pytest.raises(ForbiddenSource):
        await guard({"evil.example": addresses}, inner).connect_tcp("evil.example", 443)
    assert inner.connected == []


async def test_the_guard_connects_to_the_checked_ip_not_the_name() -> None:
    inner = RecordingBackend()
    backend = guard({"images.example": ["93.184.216.34", "2606:4700::1"]}, inner)
    await backend.connect_tcp("images.example", 443)
    assert inner.connected == [("93.184.216.34", 443)]


async def test_the_guard_tries_the_next_checked_address() -> None:
    inner = RecordingBackend(refuse={"93.184.216.34"})
    backend = guard({"images.example": ["93.184.216.34", "93.184.216.35"]}, inner)
    await backend.connect_tcp("images.example", 443)
    assert inner.connected == [("93.184.216.34", 443), ("93.184.216.35", 443)]
    with pytest.raises(httpcore.ConnectError):
        await guard({"images.example": ["93.184.216.34"]}, inner).connect_tcp("images.example", 443)


async def test_dns_rebinding_is_caught_on_every_connection() -> None:
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])

    async def rebinding(host: str, port: int) -> Sequence[str]:
        return next(answers)

    inner = RecordingBackend()
    backend = GuardedNetworkBackend(resolver=rebinding, inner=inner)
    await backend.connect_tcp("rebind.example", 443)
    with pytest.raises(ForbiddenSource):
        await backend.connect_tcp("rebind.example", 443)
    assert inner.connected == [("93.184.216.34", 443)]


async def test_ip_literals_skip_the_resolver_but_not_the_policy() -> None:
    inner = RecordingBackend()
    backend = guard({}, inner)  # any lookup would raise KeyError
    await backend.connect_tcp("8.8.8.8", 443)
    with pytest.raises(ForbiddenSource):
        await backend.connect_tcp("127.0.0.1", 443)
    with pytest.raises(ForbiddenSource):
        await backend.connect_tcp("::ffff:10.0.0.1", 443)
    assert inner.connected == [("8.8.8.8", 443)]


async def test_resolver_failures_are_connect_errors() -> None:
    async def failing(host: str, port: int) -> Sequence[str]:
        raise OSError("no such host")

    async def slow(host: str, port: int) -> Sequence[str]:
        await asyncio.sleep(10)
        return ["8.8.8.8"]

    async def empty(host: str, port: int) -> Sequence[str]:
        return []

    inner = RecordingBackend()
    with pytest.raises(httpcore.ConnectError):
        await GuardedNetworkBackend(resolver=failing, inner=inner).connect_tcp("x.example", 443)
    with pytest.raises(httpcore.ConnectTimeout):
        await GuardedNetworkBackend(resolver=slow, inner=inner).connect_tcp(
            "x.example", 443, timeout=0.05
        )
    with pytest.raises(httpcore.ConnectError):
        await GuardedNetworkBackend(resolver=empty, inner=inner).connect_tcp("x.example", 443)
    with pytest.raises(ForbiddenSource):
        await GuardedNetworkBackend(inner=inner).connect_unix_socket("/var/run/docker.sock")
    assert inner.connected == []


# --- the fetcher's redirect and size logic (MockTransport: no guard, no network) --------

MIB = 1024 * 1024
Handler = Callable[[httpx.Request], httpx.Response]


def fetcher(handler: Handler, **policy: object) -> UrlFetcher:
    return UrlFetcher(
        policy=FetchPolicy(**policy),  # type: ignore[arg-type]
        transport=httpx.MockTransport(handler),
    )


class Chunks:
    """An async body of `count` chunks of `size` bytes that counts what was pulled."""

    def __init__(self, count: int, size: int = 64 * 1024) -> None:
        self.count, self.size, self.pulled = count, size, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.count):
            self.pulled += 1
            yield b"x" * self.size


async def test_ok_body_and_request_headers() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=b"image-bytes", headers={"Set-Cookie": "s=1; Path=/"})

    async with fetcher(handler) as f:
        assert await f.fetch("https://example.com/a.png", max_bytes=100) == b"image-bytes"
        assert await f.fetch("https://example.com/a.png", max_bytes=11) == b"image-bytes"
    assert seen[0].headers["Accept-Encoding"] == "identity"
    assert "cookie" not in seen[1].headers  # cookies are never stored


async def test_a_lying_content_length_is_not_trusted() -> None:
    body = Chunks(count=64)  # 4 MiB streamed under a header claiming 10 bytes

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Length": "10"}, content=body)

    async with fetcher(handler) as f:
        with pytest.raises(SourceTooLarge) as caught:
            await f.fetch("https://example.com/a.png", max_bytes=MIB)
    assert caught.value.code is FailCode.SOURCE_TOO_LARGE
    assert body.pulled == 17  # 16 chunks fill the limit; the 17th crosses it


async def test_an_honest_content_length_over_the_limit_refuses_before_reading() -> None:
    body = Chunks(count=64)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Length": str(64 * 64 * 1024)}, content=body)

    async with fetcher(handler) as f:
        with pytest.raises(SourceTooLarge):
            await f.fetch("https://example.com/a.png", max_bytes=MIB)
    assert body.pulled == 0


async def test_exactly_the_limit_is_accepted() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=Chunks(count=16))

    async with fetcher(handler) as f:
        assert len(await f.fetch("https://example.com/a.png", max_bytes=MIB)) == MIB
        with pytest.raises(SourceTooLarge):
            await f.fetch("https://example.com/a.png", max_bytes=MIB - 1)


def redirects(chain: dict[str, tuple[int, dict[str, str]]]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        status, headers = chain.get(str(request.url), (200, {}))
        return httpx.Response(status, headers=headers, content=str(request.url).encode())

    return handler


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_redirects_are_followed_and_resolved(status: int) -> None:
    chain = {
        "https://a.example/1": (status, {"Location": "https://b.example/2"}),
        "https://b.example/2": (status, {"Location": "/3?q=1"}),
        "https://b.example/3?q=1": (status, {"Location": "4"}),
    }
    async with fetcher(redirects(chain)) as f:
        assert await f.fetch("https://a.example/1", max_bytes=100) == b"https://b.example/4"


async def test_more_than_three_redirects_fail() -> None:
    chain = {f"https://a.example/{i}": (302, {"Location": f"/{i + 1}"}) for i in range(4)}
    async with fetcher(redirects(chain)) as f:
        with pytest.raises(FetchFailed, match="redirects"):
            await f.fetch("https://a.example/0", max_bytes=100)
        assert await f.fetch("https://a.example/1", max_bytes=100) == b"https://a.example/4"
    async with fetcher(redirects(chain), max_redirects=0) as f:
        with pytest.raises(FetchFailed):
            await f.fetch("https://a.example/3", max_bytes=100)


@pytest.mark.parametrize(
    "location",
    [
        "http://a.example/insecure",
        "https://127.0.0.1/",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/",
        "https://user:pw@a.example/",
        "https://a.example:8080/",
        "https://2130706433/",
        "file:///etc/passwd",
        "https://localhost/",
    ],
)
async def test_a_redirect_to_a_forbidden_url_is_refused(location: str) -> None:
    requested: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requested.append(str(request.url))
        return httpx.Response(302, headers={"Location": location})

    async with fetcher(handler) as f:
        with pytest.raises(ForbiddenSource):
            await f.fetch("https://a.example/start", max_bytes=100)
    assert requested == ["https://a.example/start"]


@pytest.mark.parametrize(
    ("status", "error", "code"),
    [
        (404, SourceNotFound, FailCode.SOURCE_NOT_FOUND),
        (410, SourceNotFound, FailCode.SOURCE_NOT_FOUND),
        (403, FetchFailed, FailCode.FETCH_FAILED),
        (500, FetchFailed, FailCode.FETCH_FAILED),
        (204, FetchFailed, FailCode.FETCH_FAILED),
        (302, FetchFailed, FailCode.FETCH_FAILED),  # a redirect without a Location
    ],
)
async def test_status_codes(status: int, error: type[Exception], code: FailCode) -> None:
    async with fetcher(lambda request: httpx.Response(status)) as f:
        with pytest.raises(error) as caught:
            await f.fetch("https://a.example/x", max_bytes=100)
    assert caught.value.code is code  # type: ignore[attr-defined]


async def test_a_compressed_body_is_refused() -> None:
    body = Chunks(count=1)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Encoding": "gzip"}, content=body)

    async with fetcher(handler) as f:
        with pytest.raises(FetchFailed, match="compressed"):
            await f.fetch("https://a.example/x", max_bytes=100)
    assert body.pulled == 0


async def test_transport_errors_and_the_total_timeout_are_fetch_failed() -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("boom", request=request)

    async with fetcher(broken) as f:
        with pytest.raises(FetchFailed, match="ConnectError"):
            await f.fetch("https://a.example/x", max_bytes=100)

    class Slow:
        async def __aiter__(self) -> AsyncIterator[bytes]:
            while True:
                await asyncio.sleep(0.02)
                yield b"x"

    async with fetcher(lambda r: httpx.Response(200, content=Slow()), total_timeout_s=0.2) as f:
        with pytest.raises(FetchFailed, match="took over"):
            async with asyncio.timeout(5):  # a missing total timeout fails here, not hangs
                await f.fetch("https://a.example/x", max_bytes=10_000)


async def test_the_fetcher_checks_the_first_url_too() -> None:
    async with fetcher(lambda request: httpx.Response(200, content=b"x")) as f:
        with pytest.raises(ForbiddenSource):
            await f.fetch("https://10.0.0.1/x", max_bytes=100)


def test_the_default_policy() -> None:
    assert DEFAULT_POLICY.allowed_ports == frozenset({443})
    assert DEFAULT_POLICY.address_allowed is is_public_address
    assert DEFAULT_POLICY.max_redirects == 3
