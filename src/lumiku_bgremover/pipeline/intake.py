"""Intake: validate a request, price it, charge it, create the batch, enqueue its items.

Anything refused publishes `bgremove.request.rejected` with a code and charges
nothing. The batch and its charge commit in one transaction. The same
`request_id` again (a redelivery or a client's retry) creates and charges
nothing: its pending items are enqueued again (de-duplicated by item id) and
`bgremove.batch.accepted` is published again with the same event id.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg
import msgspec
from nats.js import JetStreamContext

from lumiku_bgremover import billing, pricing
from lumiku_bgremover.contracts import (
    BatchAccepted,
    BatchRequested,
    ContractError,
    ImageInput,
    ImageRequested,
    RejectCode,
    RequestRejected,
    WorkItem,
    subjects,
)
from lumiku_bgremover.contracts.codec import Identity, decode, peek_identity
from lumiku_bgremover.contracts.common import Correlation, PricingType, RequestMode, Tier
from lumiku_bgremover.contracts.work import Lane
from lumiku_bgremover.pipeline import repository as repo
from lumiku_bgremover.pipeline.events import EventPublisher
from lumiku_bgremover.services import Clock
from lumiku_bgremover.settings import Limits, NatsSettings
from lumiku_bgremover.sources import ForbiddenSource, SourceError, SourceLoader, SourceNotFound
from lumiku_bgremover.workqueue import enqueue

log = logging.getLogger(__name__)

#: Concurrent size checks (object stats) per request.
STAT_CONCURRENCY = 16
Request = BatchRequested | ImageRequested


class Rejection(Exception):  # noqa: N818 - reads as what it is: the refusal of a request
    """A request is refused with a machine-readable code; nothing is charged."""

    def __init__(self, code: RejectCode, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.path = code, message, path


def batch_id_for(request_id: str) -> str:
    """The batch id a request id always maps to (so retries meet the same batch)."""
    return "b_" + hashlib.sha256(request_id.encode()).hexdigest()[:24]


def images_of(request: Request) -> tuple[ImageInput, ...]:
    """The request's images, one for a single-image request."""
    return request.images if isinstance(request, BatchRequested) else (request.image,)


def lane_for(request: Request, limits: Limits) -> Lane:
    """Single images and small batches go in the interactive lane."""
    small = len(images_of(request)) <= limits.interactive_max_images
    return Lane.INTERACTIVE if small else Lane.BULK


def check_sizes(sizes: Sequence[int | None], request: Request, limits: Limits) -> None:
    """Per-image and per-batch byte limits, on actual sizes and declared ones."""
    total = 0
    for index, (image, size) in enumerate(zip(images_of(request), sizes, strict=True)):
        largest = max(size or 0, image.size_bytes or 0)
        if largest > limits.max_image_bytes:
            raise Rejection(
                RejectCode.IMAGE_TOO_LARGE,
                f"image {index} is {largest} bytes; the limit is {limits.max_image_bytes}",
                _path(request, index),
            )
        total += largest
    if total > limits.max_batch_bytes:
        raise Rejection(
            RejectCode.BATCH_TOO_LARGE,
            f"the batch is {total} bytes; the limit is {limits.max_batch_bytes}",
            "$.images",
        )


def _insufficient(short: billing.InsufficientCredits) -> Rejection:
    return Rejection(
        RejectCode.INSUFFICIENT_CREDITS,
        f"the balance is {short.balance} credits; {short.required} are required",
    )


def _path(request: Request, index: int) -> str:
    return f"$.images[{index}]" if isinstance(request, BatchRequested) else "$.image"


@dataclass(frozen=True, slots=True)
class Priced:
    """How a request is paid."""

    quote: pricing.BatchQuote
    pricing_type: PricingType
    charged: int
    subscription_id: UUID | None = None
    quota_key: str | None = None


class Intake:
    """Turns requests into charged batches on the work queue."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        loader: SourceLoader,
        events: EventPublisher,
        *,
        js: JetStreamContext,
        nats: NatsSettings,
        limits: Limits,
        clock: Clock,
        timezone: ZoneInfo,
    ) -> None:
        self._pool, self._loader, self._events, self._js = pool, loader, events, js
        self._nats, self._limits, self._clock, self._tz = nats, limits, clock, timezone

    async def on_batch(self, data: bytes) -> None:
        """Handle a raw `bgremove.batch.requested` body."""
        await self._on(BatchRequested, data)

    async def on_image(self, data: bytes) -> None:
        """Handle a raw `bgremove.image.requested` body."""
        await self._on(ImageRequested, data)

    async def _on(self, kind: type[BatchRequested | ImageRequested], data: bytes) -> None:
        try:
            request = decode(kind, data)
        except ContractError as error:
            identity = peek_identity(data)
            key = identity.request_id or hashlib.sha256(data).hexdigest()[:32]
            await self._reject(identity, error.code, error.message, error.path, key=key)
            return
        try:
            await self.accept(request)
        except Rejection as refusal:
            identity = Identity(request.request_id, request.user_id, request.correlation)
            await self._reject(
                identity, refusal.code, refusal.message, refusal.path, key=request.request_id
            )

    async def accept(self, request: Request) -> repo.Batch:
        """Create (or find) the request's batch; raises `Rejection`."""
        existing = await self._existing(request)
        if existing is not None:
            return await self._resume(existing, request)
        if len(images_of(request)) > self._limits.max_images:
            raise Rejection(
                RejectCode.TOO_MANY_IMAGES,
                f"{len(images_of(request))} images; the limit is {self._limits.max_images}",
                "$.images",
            )
        check_sizes(await self._sizes(request), request, self._limits)
        batch = await self._create(request)
        return await self._resume(batch, request)

    async def _existing(self, request: Request) -> repo.Batch | None:
        async with self._pool.acquire() as conn:
            batch = await repo.get_batch_by_request(conn, request.request_id)
        if batch is not None and batch.user_id != request.user_id:
            raise Rejection(
                RejectCode.INVALID_REQUEST, "request_id is already used by another request",
                "$.request_id",
            )  # fmt: skip
        return batch

    async def _sizes(self, request: Request) -> list[int | None]:
        gate = asyncio.Semaphore(STAT_CONCURRENCY)

        async def size(index: int, image: ImageInput) -> int | None:
            async with gate:
                try:
                    return await self._loader.size(image.ref, request.user_id)
                except ForbiddenSource as error:
                    code, message = RejectCode.FORBIDDEN_SOURCE, str(error)
                except SourceNotFound as error:
                    code, message = RejectCode.NOT_FOUND, str(error)
                except SourceError as error:
                    code, message = RejectCode.INVALID_REQUEST, str(error)
                raise Rejection(code, message, f"{_path(request, index)}.ref")

        images = images_of(request)
        return list(await asyncio.gather(*(size(i, im) for i, im in enumerate(images))))

    async def _create(self, request: Request) -> repo.Batch:
        batch_id = batch_id_for(request.request_id)
        async with self._pool.acquire() as conn, conn.transaction():
            priced = await self._pay(conn, request, batch_id)
            created = await repo.insert_batch(
                conn, self._new_batch(request, batch_id, priced), self._new_items(request, batch_id)
            )
            batch = await repo.get_batch(conn, batch_id)
        if not created:
            log.info(
                "request %s met its batch %s created concurrently", request.request_id, batch_id
            )
        assert batch is not None
        return batch

    async def _pay(self, conn: billing.Conn, request: Request, batch_id: str) -> Priced:
        count = len(images_of(request))
        quote = pricing.quote_batch(request.tier, count, max_images=self._limits.max_images)
        if isinstance(request, ImageRequested):
            return await self._pay_single(conn, request, batch_id, quote)
        paid = await billing.charge(
            conn, request.user_id, quote.total, idempotency_key=f"charge:{batch_id}",
            reason="batch_charge", reference=billing.Reference("batch", batch_id),
        )  # fmt: skip
        if isinstance(paid, billing.InsufficientCredits):
            raise _insufficient(paid)
        return Priced(quote, PricingType.CREDITS, quote.total)

    async def _pay_single(
        self, conn: billing.Conn, request: ImageRequested, batch_id: str,
        quote: pricing.BatchQuote,
    ) -> Priced:  # fmt: skip
        key = f"pay:{batch_id}"
        paid = await billing.pay_single(
            conn, request.user_id, request.tier, now=self._clock(), tz=self._tz,
            idempotency_key=key, reference=billing.Reference("batch", batch_id),
        )  # fmt: skip
        if isinstance(paid, billing.InsufficientCredits):
            raise _insufficient(paid)
        if paid.quota is None:
            return Priced(quote, paid.pricing_type, paid.credits_charged)
        return Priced(quote, paid.pricing_type, 0, paid.quota.subscription_id, key)

    def _new_batch(self, request: Request, batch_id: str, priced: Priced) -> repo.NewBatch:
        quote = priced.quote
        single = isinstance(request, ImageRequested)
        return repo.NewBatch(
            id=batch_id, request_id=request.request_id, user_id=request.user_id,
            tier=request.tier.value, mode="single" if single else "batch",
            lane=lane_for(request, self._limits).value, pricing_type=priced.pricing_type.value,
            total_items=quote.count, credits_per_image=quote.credits_per_image,
            base_total=quote.base_total, discount_pct=quote.discount_pct,
            discount=quote.discount, credits_charged=priced.charged,
            options=msgspec.to_builtins(request.options),
            correlation=msgspec.to_builtins(request.correlation) if request.correlation else None,
            subscription_id=priced.subscription_id,
            quota_key=priced.quota_key,
        )  # fmt: skip

    def _new_items(self, request: Request, batch_id: str) -> list[repo.NewItem]:
        return [
            repo.NewItem(
                id=f"{batch_id}-{index:03d}",
                idx=index,
                filename=image.filename,
                source=msgspec.to_builtins(image.ref),
                declared_size=image.size_bytes,
            )
            for index, image in enumerate(images_of(request))
        ]

    async def _resume(self, batch: repo.Batch, request: Request) -> repo.Batch:
        """Enqueue what is still pending and (re)announce the acceptance."""
        async with self._pool.acquire() as conn:
            pending = await repo.list_items(conn, batch.id, status="pending")
        images = images_of(request)
        for item in pending:
            await enqueue(self._js, self._nats, self._work_item(batch, request, images, item))
        await self._events.publish(subjects.BATCH_ACCEPTED, self._accepted(batch), key=batch.id)
        return batch

    def _work_item(
        self, batch: repo.Batch, request: Request, images: Sequence[ImageInput], item: repo.Item
    ) -> WorkItem:
        image = images[item.idx]
        return WorkItem(
            item_id=item.id, batch_id=batch.id, user_id=batch.user_id, index=item.idx,
            tier=Tier(batch.tier), mode=RequestMode(batch.mode), filename=item.filename,
            ref=image.ref, options=request.options, lane=Lane(batch.lane),
            size_bytes=image.size_bytes, then_upscale=request.then_upscale,
            correlation=request.correlation, enqueued_at=self._clock(),
        )  # fmt: skip

    def _accepted(self, batch: repo.Batch) -> BatchAccepted:
        quote = pricing.quote_batch(
            Tier(batch.tier), batch.total_items, max_images=max(500, batch.total_items)
        )
        return BatchAccepted(
            request_id=batch.request_id, batch_id=batch.id, user_id=batch.user_id,
            tier=Tier(batch.tier), mode=RequestMode(batch.mode), count=batch.total_items,
            pricing_type=PricingType(batch.pricing_type), credits_charged=batch.credits_charged,
            discount_pct=batch.discount_pct,
            per_image=quote.per_image_str if batch.credits_charged else "0",
            lane=Lane(batch.lane),
            correlation=None if batch.correlation is None else Correlation(**batch.correlation),
            accepted_at=batch.created_at,
        )  # fmt: skip

    async def _reject(
        self, identity: Identity, code: RejectCode, message: str, path: str | None, *, key: str
    ) -> None:
        log.info("request %s rejected: %s %s", identity.request_id, code, message)
        event = RequestRejected(
            request_id=identity.request_id, user_id=identity.user_id, code=code,
            message=" ".join(message.split())[:2000] or code.value, path=path,
            correlation=identity.correlation, rejected_at=self._clock(),
        )  # fmt: skip
        await self._events.publish(subjects.REQUEST_REJECTED, event, key=f"{key}:{code}")
