"""Lending an engine's input image to a provider by URL: stored briefly, presigned, deleted.

With SEGMIND_IMAGE_TRANSPORT=url the Segmind engine sends a URL instead of base64. An
`ImageLinker` gives it one: `StoreLinker` puts the prepared image under
`ENGINE_INPUTS_PREFIX` in our object store (a random key, so the URL names no user),
presigns a GET for a short time, and deletes the object when the call ends, whether it
succeeded or not. A bucket lifecycle rule on the prefix (`storage.lifecycle`) removes
what a crash left behind. The pipeline runtime injects the linker (`default_router`).
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Final, Protocol

from lumiku_bgremover.contracts.codes import FailCode
from lumiku_bgremover.engines.base import EngineError
from lumiku_bgremover.storage.base import ENGINE_INPUTS_PREFIX, ObjectStore, StorageError

__all__ = ["ImageLinker", "LinkError", "StoreLinker", "link_ttl"]

log = logging.getLogger(__name__)

#: Seconds a lent URL outlives the engine's own timeout (the provider may fetch late).
TTL_MARGIN_S: Final = 60


class ImageLinker(Protocol):
    """Lends bytes by URL for the duration of an `async with` block."""

    def link(self, data: bytes, *, content_type: str) -> AbstractAsyncContextManager[str]:
        """A URL serving `data` inside the block; gone after it."""
        ...


class LinkError(EngineError):
    """The image could not be stored or presigned: our trouble, so retryable."""

    ours = True

    def __init__(self, message: str) -> None:
        super().__init__(message, code=FailCode.ENGINE_UNAVAILABLE, retryable=True)


def link_ttl(timeout_s: float) -> int:
    """A URL lifetime covering an engine call of `timeout_s`, and a margin."""
    return math.ceil(timeout_s) + TTL_MARGIN_S


def random_key() -> str:
    """A key under the engine inputs' prefix that nobody can guess."""
    return f"{ENGINE_INPUTS_PREFIX}{uuid.uuid4().hex}"


class StoreLinker:
    """An `ImageLinker` on an `ObjectStore` (S3 presigned GET URLs)."""

    def __init__(
        self, store: ObjectStore, *, ttl_s: int, keys: Callable[[], str] = random_key
    ) -> None:
        self._store, self._ttl_s, self._keys = store, ttl_s, keys

    @asynccontextmanager
    async def link(self, data: bytes, *, content_type: str) -> AsyncIterator[str]:
        """Store `data`, yield its presigned URL, delete it on the way out."""
        key = self._keys()
        try:
            await self._store.put_bytes(key, data, content_type)
        except StorageError as error:
            raise LinkError(f"could not store the engine input {key}: {error}") from error
        try:
            try:
                url = await self._store.presigned_get_url(key, ttl_s=self._ttl_s)
            except StorageError as error:
                raise LinkError(f"could not presign the engine input {key}: {error}") from error
            yield url
        finally:
            await self._remove(key)

    async def _remove(self, key: str) -> None:
        try:
            await self._store.delete(key)
        except StorageError as error:  # the lifecycle rule on the prefix removes it later
            log.warning("could not delete the engine input %s: %s", key, error)
