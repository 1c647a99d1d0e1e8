"""What sources may be read (pure): address policy, URL checks, object-ref checks, errors.

`check_url` parses with `httpx.URL`, the parser the request itself uses, so the
check and the connection cannot disagree about the host. It refuses anything but
https, user info, ports outside the policy, non-canonical numeric hosts
(`2130706433`, `0x7f000001`, `127.1`: the C resolver reads them as IPv4),
`localhost`, names that only ever resolve inside a private network (one label such
as `metadata` or this machine's own name, `.internal` as in
`metadata.google.internal`, `.local`, `.localdomain`, `.home.arpa`), and IP
literals the address policy refuses. Host names are checked again at connect
time, on the addresses they resolve to (`guard.py`).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import ClassVar, Final

import httpx

from lumiku_bgremover.contracts.codes import FailCode
from lumiku_bgremover.contracts.common import USER_ID_PATTERN, ObjectRef
from lumiku_bgremover.storage.base import InvalidKey, validate_bucket, validate_key

__all__ = [
    "DEFAULT_POLICY",
    "AddressPolicy",
    "FetchFailed",
    "FetchPolicy",
    "ForbiddenSource",
    "IPAddress",
    "SourceError",
    "SourceNotFound",
    "SourceTooLarge",
    "check_object_ref",
    "check_url",
    "ip_literal",
    "is_public_address",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: Decides whether the fetcher may connect to an address.
AddressPolicy = Callable[[IPAddress], bool]


# --- errors ---------------------------------------------------------------------------


class SourceError(Exception):
    """A source image could not be loaded; `code` is the item's `FailCode`."""

    code: ClassVar[FailCode] = FailCode.FETCH_FAILED


class ForbiddenSource(SourceError):  # noqa: N818 - reads as the condition it reports
    """The ref is outside the user's prefix or allow-list, or the URL failed the SSRF guard."""

    code = FailCode.FORBIDDEN_SOURCE


class SourceNotFound(SourceError):  # noqa: N818
    """The object does not exist, or the URL answered 404 or 410."""

    code = FailCode.SOURCE_NOT_FOUND


class SourceTooLarge(SourceError):  # noqa: N818
    """The source is larger than the per-image limit."""

    code = FailCode.SOURCE_TOO_LARGE


class FetchFailed(SourceError):  # noqa: N818
    """The source could not be read: network error, timeout, bad status."""

    code = FailCode.FETCH_FAILED


# --- address and URL policy (pure) ----------------------------------------------------

_V4_BLOCKED: Final = tuple(
    ipaddress.IPv4Network(net)
    for net in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
        "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16",
        "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
    )
)  # fmt: skip
_V6_BLOCKED: Final = tuple(
    ipaddress.IPv6Network(net)
    for net in (
        "::/96",  # unspecified, loopback, deprecated IPv4-compatible
        "::ffff:0:0:0/96", "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:db8::/32",
        "3fff::/20", "5f00::/16", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
    )
)  # fmt: skip
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")


def is_public_address(address: IPAddress | str) -> bool:
    """Whether `address` is a public unicast address the fetcher may connect to.

    Refuses private, loopback, link-local (169.254.169.254 included), CGNAT,
    multicast, reserved, documentation and unspecified addresses, IPv6 unique-local,
    site-local and scoped addresses, Teredo, and IPv4-mapped, 6to4 or NAT64
    addresses whose embedded IPv4 address is not public.
    """
    try:
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    except ValueError:
        return False
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        return _public_v4(embedded)
    if isinstance(ip, ipaddress.IPv4Address):
        return _public_v4(ip)
    return ip.scope_id is None and ip.is_global and not any(ip in net for net in _V6_BLOCKED)


def _public_v4(ip: ipaddress.IPv4Address) -> bool:
    return ip.is_global and not any(ip in net for net in _V4_BLOCKED)


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address inside an IPv4-mapped, 6to4 or NAT64 address."""
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchPolicy:
    """What the URL fetcher may reach, and how long it may take."""

    allowed_ports: frozenset[int] = frozenset({443})
    address_allowed: AddressPolicy = field(default=is_public_address)
    max_redirects: int = 3
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 10.0  #: longest wait for any one read
    total_timeout_s: float = 30.0  #: the whole fetch, redirects included


#: Public addresses on port 443 only.
DEFAULT_POLICY: Final = FetchPolicy()

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME_RE: Final = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*\.?$")
_USER_ID_RE: Final = re.compile(USER_ID_PATTERN)
#: Names under these suffixes never resolve on the public internet: `.internal` is
#: reserved for private use (cloud metadata: `metadata.google.internal`), `.local` is
#: multicast DNS, `.localdomain` names this machine (`localhost.localdomain`),
#: `.home.arpa` home networks, `.localhost` loopback.
PRIVATE_NAME_SUFFIXES: Final = (".internal", ".local", ".localdomain", ".home.arpa", ".localhost")


def check_url(url: str, policy: FetchPolicy = DEFAULT_POLICY) -> None:
    """Raise `ForbiddenSource` unless `url` is an https URL the policy lets us fetch."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise ForbiddenSource(f"not a valid URL: {exc}") from None
    if parsed.scheme != "https":
        raise ForbiddenSource(f"only https URLs are fetched, not {parsed.scheme or 'none'}")
    if parsed.userinfo:
        raise ForbiddenSource("URLs with user info (user:password@) are refused")
    port = parsed.port or 443
    if port not in policy.allowed_ports:
        raise ForbiddenSource(f"port {port} is not allowed")
    _check_host(parsed.raw_host.decode("ascii").lower(), policy)


def _check_host(host: str, policy: FetchPolicy) -> None:
    if not host:
        raise ForbiddenSource("the URL has no host")
    literal = ip_literal(host)
    if literal is not None:
        if not policy.address_allowed(literal):
            raise ForbiddenSource(f"address {literal} is not allowed")
        return
    if not _HOSTNAME_RE.match(host) or len(host) > 253:  # noqa: PLR2004 - DNS name limit
        raise ForbiddenSource(f"not a valid host name: {host!r}")
    if _is_numeric_host(host):
        raise ForbiddenSource(f"numeric host {host!r} is not a canonical IP address")
    _check_public_name(host.rstrip("."))


def _check_public_name(name: str) -> None:
    """Refuse names that resolve only inside a private network (pure, before any lookup)."""
    if name == "localhost":
        raise ForbiddenSource("localhost is not allowed")
    if "." not in name:
        raise ForbiddenSource(f"single-label host {name!r} resolves only on a private network")
    if ("." + name).endswith(PRIVATE_NAME_SUFFIXES):
        raise ForbiddenSource(f"host {name!r} is in a private-use domain")


def ip_literal(host: str) -> IPAddress | None:
    """`host` as an IP address when it is a canonical IP literal, else None."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _is_numeric_host(host: str) -> bool:
    """True for hosts the C resolver reads as IPv4 (`127.1`, `0x7f000001`, `017700000001`)."""
    if host.rstrip(".").rsplit(".", 1)[-1].isdigit():
        return True
    try:
        socket.inet_aton(host)
    except OSError:
        return False
    return True


def check_object_ref(
    ref: ObjectRef, *, user_id: str, own_bucket: str, allowed_buckets: Collection[str]
) -> None:
    """Raise `ForbiddenSource` unless `ref` may be read for `user_id`.

    Allowed: keys under `originals/{user_id}/` in our own bucket (whatever the
    allow-list says), and any valid key in an allow-listed bucket.
    """
    try:
        validate_bucket(ref.bucket)
        validate_key(ref.key)
    except InvalidKey as exc:
        raise ForbiddenSource(str(exc)) from None
    if ref.bucket != own_bucket:
        if ref.bucket not in allowed_buckets:
            raise ForbiddenSource(f"bucket {ref.bucket!r} is not allowed")
        return
    if not _USER_ID_RE.match(user_id):
        raise ForbiddenSource(f"invalid user id {user_id!r}")
    if not ref.key.startswith(f"originals/{user_id}/"):
        raise ForbiddenSource("the key is not under the user's originals/ prefix")
