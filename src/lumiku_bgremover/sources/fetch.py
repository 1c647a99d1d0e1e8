"""Loading source images: `UrlFetcher` (https under the guard) and `SourceLoader`.

Redirects are followed by hand (at most `FetchPolicy.max_redirects`), each hop
checked again by `check_url` and, when it connects, by the guarded backend. Bodies
are streamed and cut at `max_bytes + 1` bytes; a Content-Length over the limit
refuses early, but none is ever trusted to accept. Compressed encodings are not
asked for and not accepted (no decompression bombs on the wire). Cookies are never
stored, so one user's fetch cannot carry cookies into another's.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.cookiejar
import ssl
from collections.abc import Collection, Iterator
from typing import Final, Self

import httpx

from lumiku_bgremover.contracts.common import ImageRef
from lumiku_bgremover.sources.guard import GuardedTransport, Resolver, system_resolver
from lumiku_bgremover.sources.policy import (
    DEFAULT_POLICY,
    FetchFailed,
    FetchPolicy,
    ForbiddenSource,
    SourceNotFound,
    SourceTooLarge,
    check_object_ref,
    check_url,
)
from lumiku_bgremover.storage.base import (
    BucketNotAllowed,
    InvalidKey,
    ObjectNotFound,
    ObjectStore,
    ObjectTooLarge,
    StorageError,
)

__all__ = ["SourceLoader", "UrlFetcher"]

_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_GONE: Final = frozenset({404, 410})


class UrlFetcher:
    """Fetches https URLs under the SSRF guard; one long-lived client (close with `aclose`).

    `transport` replaces the guarded one (tests of the redirect and size logic may pass
    `httpx.MockTransport`; production never does). `resolver` and `ssl_context` feed
    the guarded transport.
    """

    def __init__(
        self,
        *,
        policy: FetchPolicy = DEFAULT_POLICY,
        resolver: Resolver = system_resolver,
        ssl_context: ssl.SSLContext | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        user_agent: str = "lumiku-bgremover",
    ) -> None:
        self.policy = policy
        timeout = httpx.Timeout(policy.read_timeout_s, connect=policy.connect_timeout_s)
        self._client = httpx.AsyncClient(
            transport=transport
            or GuardedTransport(
                address_allowed=policy.address_allowed, resolver=resolver, ssl_context=ssl_context
            ),
            follow_redirects=False,
            trust_env=False,
            timeout=timeout,
            cookies=_no_cookies(),
            headers={"User-Agent": user_agent, "Accept": "image/*", "Accept-Encoding": "identity"},
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the client and its connections."""
        await self._client.aclose()

    async def fetch(self, url: str, *, max_bytes: int) -> bytes:
        """The body at `url` (redirects followed and checked), at most `max_bytes` long.

        Raises `ForbiddenSource`, `SourceNotFound`, `SourceTooLarge` or `FetchFailed`.
        """
        try:
            async with asyncio.timeout(self.policy.total_timeout_s):
                return await self._follow(url, max_bytes)
        except TimeoutError:
            raise FetchFailed(f"fetch took over {self.policy.total_timeout_s} s") from None
        except httpx.TimeoutException as exc:
            raise FetchFailed(f"timed out: {type(exc).__name__}") from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise FetchFailed(f"{type(exc).__name__}: {exc}") from None

    async def _follow(self, url: str, max_bytes: int) -> bytes:
        for _ in range(self.policy.max_redirects + 1):
            check_url(url, self.policy)
            async with self._client.stream("GET", url) as response:
                target = _redirect_target(response)
                if target is None:
                    return await _read_body(response, max_bytes)
            url = target
        raise FetchFailed(f"more than {self.policy.max_redirects} redirects")


def _no_cookies() -> http.cookiejar.CookieJar:
    """A cookie jar that accepts no cookie from any domain (given as is: httpx keeps it)."""
    return http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))


def _redirect_target(response: httpx.Response) -> str | None:
    if response.status_code not in _REDIRECTS:
        return None
    location = response.headers.get("Location")
    if not location:
        raise FetchFailed(f"HTTP {response.status_code} without a Location")
    try:
        return str(response.url.join(location))
    except httpx.InvalidURL as exc:
        raise ForbiddenSource(f"redirect to an invalid URL: {exc}") from None


async def _read_body(response: httpx.Response, max_bytes: int) -> bytes:
    status = response.status_code
    if status in _GONE:
        raise SourceNotFound(f"HTTP {status} from {response.url.host}")
    if status != 200:  # noqa: PLR2004
        raise FetchFailed(f"HTTP {status} from {response.url.host}")
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise SourceTooLarge(f"Content-Length {declared} is over {max_bytes} bytes")
    if response.headers.get("Content-Encoding", "identity").strip().lower() != "identity":
        raise FetchFailed("a compressed body was sent though identity was asked for")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():  # identity only (checked above): raw bytes
        size += len(chunk)
        if size > max_bytes:
            raise SourceTooLarge(f"body is over {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


# --- loading a source -----------------------------------------------------------------


class SourceLoader:
    """Loads an `ImageRef` for a user: object refs from the store, URLs by the fetcher."""

    def __init__(
        self,
        store: ObjectStore,
        fetcher: UrlFetcher,
        *,
        max_bytes: int,
        allowed_buckets: Collection[str] = (),
    ) -> None:
        self._store = store
        self._fetcher = fetcher
        self._max_bytes = max_bytes
        self._allowed = frozenset(allowed_buckets)

    def check(self, ref: ImageRef, user_id: str) -> None:
        """The pure checks only (prefix or allow-list, or `check_url`): `ForbiddenSource`."""
        obj = ref.object
        if obj is None:
            check_url(ref.url or "", self._fetcher.policy)
            return
        check_object_ref(
            obj, user_id=user_id, own_bucket=self._store.bucket, allowed_buckets=self._allowed
        )

    async def load(self, ref: ImageRef, user_id: str) -> bytes:
        """The source's bytes, at most `max_bytes`; raises a `SourceError`."""
        self.check(ref, user_id)
        obj = ref.object
        if obj is None:
            return await self._fetcher.fetch(ref.url or "", max_bytes=self._max_bytes)
        with _storage_errors():
            return await self._store.get_bytes(
                obj.key, bucket=obj.bucket, max_bytes=self._max_bytes
            )

    async def size(self, ref: ImageRef, user_id: str) -> int | None:
        """The stored object's size, or None for a URL (known only once fetched)."""
        self.check(ref, user_id)
        obj = ref.object
        if obj is None:
            return None
        with _storage_errors():
            return (await self._store.stat(obj.key, bucket=obj.bucket)).size


@contextlib.contextmanager
def _storage_errors() -> Iterator[None]:
    try:
        yield
    except ObjectNotFound as exc:
        raise SourceNotFound(str(exc)) from None
    except ObjectTooLarge as exc:
        raise SourceTooLarge(str(exc)) from None
    except (BucketNotAllowed, InvalidKey) as exc:
        raise ForbiddenSource(str(exc)) from None
    except StorageError as exc:
        raise FetchFailed(str(exc)) from None
