"""Weights downloaded over HTTPS from a model hub: streamed, hashed, capped, then renamed.

`download` streams one URL with httpx into a `.part` file next to the target, hashing
while it writes. The expected sha256 is the pinned one when the catalogue (or
MODEL_SOURCES) gives one; else the hub's own: Hugging Face answers a `resolve` URL of
an LFS file with a redirect carrying `X-Linked-Etag: "<sha256 of the file>"` (the
value huggingface_hub itself takes as the file's etag; a plain git file gets a
40-hex git blob id instead, which is not a sha256 and is ignored). With neither, the
download is refused before its body is read unless the operator trusts unpinned
weights explicitly (`models fetch --trust-unpinned`, MODEL_TRUST_UNPINNED=true).

The caller holds the model's file lock (`weights.resolve_weights`), so two threads or
processes never download the same file at once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

import httpx

from lumiku_bgremover.engines.weights import WeightsFetchError, WeightsIntegrityError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "Download",
    "HubLimits",
    "advertised_sha256",
    "download",
]

log = logging.getLogger(__name__)

#: Weights files this service knows are under 1 GB (BiRefNet fp32 is ~930 MB).
DEFAULT_MAX_BYTES: Final = 2 << 30
_HEX64: Final = re.compile(r"^[0-9a-f]{64}$")
_BLOCK: Final = 1 << 20
_NOT_FOUND: Final = frozenset({401, 403, 404, 410})


@dataclass(frozen=True, slots=True, kw_only=True)
class HubLimits:
    """How long and how much one download may take."""

    connect_s: float = 15.0
    read_s: float = 60.0  #: the longest pause between two blocks of the body
    total_s: float = 1800.0  #: the whole download
    max_bytes: int = DEFAULT_MAX_BYTES


@dataclass(frozen=True, slots=True)
class Download:
    """A finished, verified download."""

    path: Path
    sha256: str
    size: int
    verified_by: str  #: "pin", "hub" (X-Linked-Etag / ETag) or "unpinned"


#: Makes the HTTP client (tests pass one with a transport of their own).
ClientFactory = Callable[[HubLimits], httpx.Client]


def default_client(limits: HubLimits) -> httpx.Client:
    """A client that follows redirects (the hub sends files from a CDN)."""
    timeout = httpx.Timeout(limits.read_s, connect=limits.connect_s)
    headers = {"Accept-Encoding": "identity"}  # the bytes as stored, hashed as sent
    return httpx.Client(timeout=timeout, headers=headers, follow_redirects=True, max_redirects=5)


def _etag_sha256(value: str | None) -> str | None:
    if not value:
        return None
    tag = value.strip().removeprefix("W/").strip('"').lower()
    return tag if _HEX64.match(tag) else None


def advertised_sha256(responses: Iterable[httpx.Response]) -> str | None:
    """The sha256 a hub advertises for the file: `X-Linked-Etag` on any response of the
    redirect chain, else a 64-hex `ETag` of the first (the hub's own) answer."""
    answers = list(responses)
    for response in answers:
        found = _etag_sha256(response.headers.get("x-linked-etag"))
        if found:
            return found
    return _etag_sha256(answers[0].headers.get("etag")) if answers else None


def download(
    url: str,
    target: Path,
    *,
    pinned: str | None,
    trust_unpinned: bool = False,
    limits: HubLimits | None = None,
    client_factory: ClientFactory = default_client,
) -> Download:
    """Download `url` to `target` (renamed into place once verified); blocking.

    Raises `WeightsFetchError` (unreachable, HTTP error, timeout, truncated body) or
    `WeightsIntegrityError` (wrong sha256, too big, no hash to check against).
    """
    limits = limits or HubLimits()
    part = target.with_name(f".{target.name}.part")
    try:
        with client_factory(limits) as client, client.stream("GET", url) as response:
            _check_status(response, url)
            expected, how = _expected(response, url, pinned, trust_unpinned=trust_unpinned)
            _check_length(response, url, limits)
            digest, size = _stream_to(part, response, limits, url)
    except httpx.TimeoutException as error:
        part.unlink(missing_ok=True)
        raise WeightsFetchError(f"downloading {url} timed out: {error!r}", retryable=True) from None
    except httpx.HTTPError as error:
        part.unlink(missing_ok=True)
        raise WeightsFetchError(f"downloading {url} failed: {error!r}", retryable=True) from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return _verified(part, target, Download(target, digest, size, how), expected, url)


def _check_status(response: httpx.Response, url: str) -> None:
    if response.status_code == httpx.codes.OK:
        return
    hint = "check its URL in MODEL_SOURCES (name=url[#sha256])"
    if response.status_code in _NOT_FOUND:
        raise WeightsFetchError(f"{url} answered {response.status_code}: {hint}")
    raise WeightsFetchError(f"{url} answered {response.status_code}", retryable=True)


def _expected(
    response: httpx.Response, url: str, pinned: str | None, *, trust_unpinned: bool
) -> tuple[str | None, str]:
    if pinned is not None:
        return pinned.lower(), "pin"
    advertised = advertised_sha256([*response.history, response])
    if advertised is not None:
        return advertised, "hub"
    if trust_unpinned:
        log.warning("downloading %s with no sha256 to check it against (trusted)", url)
        return None, "unpinned"
    raise WeightsIntegrityError(
        f"{url} has no pinned sha256 and the server advertises none (no X-Linked-Etag): "
        "pin it in MODEL_SOURCES as name=url#sha256, or trust it explicitly "
        "(`models fetch --trust-unpinned`, MODEL_TRUST_UNPINNED=true)"
    )


def _check_length(response: httpx.Response, url: str, limits: HubLimits) -> None:
    length = response.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limits.max_bytes:
        raise WeightsIntegrityError(
            f"{url} is {int(length)} bytes, over the cap of {limits.max_bytes}"
        )


def _stream_to(
    part: Path, response: httpx.Response, limits: HubLimits, url: str
) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    deadline = time.monotonic() + limits.total_s
    with _sink(part) as sink:
        for block in response.iter_raw(_BLOCK):
            size += len(block)
            if size > limits.max_bytes:
                raise WeightsIntegrityError(f"{url} sent over {limits.max_bytes} bytes")
            if time.monotonic() > deadline:
                raise WeightsFetchError(
                    f"downloading {url} took over {limits.total_s:.0f} s", retryable=True
                )
            digest.update(block)
            sink.write(block)
    length = response.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) != size:
        raise WeightsFetchError(f"{url} ended after {size} of {int(length)} bytes", retryable=True)
    return digest.hexdigest(), size


@contextmanager
def _sink(part: Path) -> Iterator[IO[bytes]]:
    with part.open("wb") as sink:
        yield sink
        sink.flush()
        os.fsync(sink.fileno())


def _verified(part: Path, target: Path, done: Download, expected: str | None, url: str) -> Download:
    if expected is not None and done.sha256 != expected:
        part.unlink(missing_ok=True)
        raise WeightsIntegrityError(
            f"{url} gave sha256 {done.sha256}, expected {expected} ({done.verified_by}): "
            "nothing was cached"
        )
    part.replace(target)
    log.info("cached %s (%d bytes, sha256 %s, by %s)", target, done.size, done.sha256,
             done.verified_by)  # fmt: skip
    return done
