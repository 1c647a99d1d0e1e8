"""The connect-time SSRF guard: an httpcore network backend, and an httpx transport on it.

`GuardedNetworkBackend.connect_tcp` is called by httpcore with the origin's host
name. It resolves the name itself (injected resolver), refuses the connection when
ANY resolved address fails the address policy, and connects to a checked IP
address, never to the name. httpcore then does TLS on that stream with the host
name (SNI and certificate verification), and the Host header keeps the name too.
There is no second lookup between the check and the connection, so DNS rebinding
cannot swap in a private address. A pooled keep-alive connection is only ever one
that was checked when it was opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Final

import certifi
import httpcore
import httpx

from lumiku_bgremover.sources.policy import (
    AddressPolicy,
    ForbiddenSource,
    IPAddress,
    ip_literal,
    is_public_address,
)

__all__ = [
    "GuardedNetworkBackend",
    "GuardedTransport",
    "Resolver",
    "default_ssl_context",
    "system_resolver",
]

#: Resolves `(host, port)` to IP address strings.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]


async def system_resolver(host: str, port: int) -> list[str]:
    """The addresses the operating system's resolver gives for `host`."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def default_ssl_context() -> ssl.SSLContext:
    """Certificate-verifying TLS with the certifi CA bundle."""
    return ssl.create_default_context(cafile=certifi.where())


class GuardedNetworkBackend(httpcore.AsyncNetworkBackend):
    """Resolves, checks every address against the policy, connects to a checked IP."""

    def __init__(
        self,
        *,
        address_allowed: AddressPolicy = is_public_address,
        resolver: Resolver = system_resolver,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._allowed = address_allowed
        self._resolver = resolver
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Connect to the first reachable checked address of `host`."""
        error: Exception = httpcore.ConnectError(f"{host} has no address")
        for ip in await self._checked_addresses(host, port, timeout):
            try:
                return await self._inner.connect_tcp(
                    str(ip), port, timeout, local_address, socket_options
                )
            except httpcore.ConnectError as exc:
                error = exc
        raise error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Never: sources are reached over TCP only."""
        del path, timeout, socket_options
        raise ForbiddenSource("unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        """Sleep with the inner backend."""
        await self._inner.sleep(seconds)

    async def _checked_addresses(
        self,
        host: str,
        port: int,
        timeout: float | None,  # noqa: ASYNC109 - the connect timeout, passed on
    ) -> list[IPAddress]:
        names = [host] if ip_literal(host) is not None else await self._resolve(host, port, timeout)
        addresses = list(dict.fromkeys(ip_literal(name) for name in names))
        for ip in addresses:
            if ip is None or not self._allowed(ip):
                raise ForbiddenSource(f"{host} resolves to a forbidden address ({ip})")
        return [ip for ip in addresses if ip is not None]

    async def _resolve(
        self,
        host: str,
        port: int,
        timeout: float | None,  # noqa: ASYNC109
    ) -> list[str]:
        try:
            async with asyncio.timeout(timeout):
                return list(await self._resolver(host, port))
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None


# --- transport: httpx on an httpcore pool with the guarded backend ---------------------

_ERRORS: Final[tuple[tuple[type[Exception], type[httpx.TransportError]], ...]] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.ProtocolError, httpx.ProtocolError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.TimeoutException, httpx.TimeoutException),
)
_CORE_ERRORS: Final = tuple(theirs for theirs, _ in _ERRORS)


@contextlib.contextmanager
def _httpx_errors() -> Iterator[None]:
    """Re-raise httpcore's errors as the matching httpx ones."""
    try:
        yield
    except _CORE_ERRORS as exc:
        mapped = next(ours for theirs, ours in _ERRORS if isinstance(exc, theirs))
        raise mapped(str(exc)) from exc


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, response: httpcore.Response) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _httpx_errors():
            async for chunk in self._response.aiter_stream():
                yield chunk

    async def aclose(self) -> None:
        await self._response.aclose()


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport whose every connection goes through `GuardedNetworkBackend`.

    HTTP/1.1 only, no proxies, no retries.
    """

    def __init__(
        self,
        *,
        address_allowed: AddressPolicy = is_public_address,
        resolver: Resolver = system_resolver,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 20,
    ) -> None:
        backend = GuardedNetworkBackend(address_allowed=address_allowed, resolver=resolver)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context or default_ssl_context(),
            max_connections=max_connections,
            keepalive_expiry=10.0,
            http1=True,
            http2=False,
            network_backend=backend,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request` through the guarded pool."""
        url = request.url
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _httpx_errors():
            response = await self._pool.handle_async_request(core)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        """Close every pooled connection."""
        await self._pool.aclose()
