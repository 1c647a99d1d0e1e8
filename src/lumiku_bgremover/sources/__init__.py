"""Fetching source images: object-store refs under the user's prefix, HTTPS under an SSRF guard.

- `policy`: pure rules (`check_url`, `check_object_ref`, `is_public_address`) and errors.
- `guard`: the connect-time guard (`GuardedNetworkBackend`, `GuardedTransport`).
- `fetch`: `UrlFetcher` (redirects, byte cap, timeouts) and `SourceLoader`.

Every error is a `SourceError` whose `code` is the item's `FailCode`.
"""

from __future__ import annotations

from lumiku_bgremover.sources.fetch import SourceLoader, UrlFetcher
from lumiku_bgremover.sources.guard import (
    GuardedNetworkBackend,
    GuardedTransport,
    Resolver,
    default_ssl_context,
    system_resolver,
)
from lumiku_bgremover.sources.policy import (
    DEFAULT_POLICY,
    AddressPolicy,
    FetchFailed,
    FetchPolicy,
    ForbiddenSource,
    SourceError,
    SourceNotFound,
    SourceTooLarge,
    check_object_ref,
    check_url,
    is_public_address,
)

__all__ = [
    "DEFAULT_POLICY",
    "AddressPolicy",
    "FetchFailed",
    "FetchPolicy",
    "ForbiddenSource",
    "GuardedNetworkBackend",
    "GuardedTransport",
    "Resolver",
    "SourceError",
    "SourceLoader",
    "SourceNotFound",
    "SourceTooLarge",
    "UrlFetcher",
    "check_object_ref",
    "check_url",
    "default_ssl_context",
    "is_public_address",
    "system_resolver",
]
