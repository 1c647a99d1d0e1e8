"""Intake: validate a request, check its sources, price it, charge it, create the batch,
enqueue its items.

Anything refused publishes `bgremove.request.rejected` with a code and charges
nothing. The batch and its charge commit in one transaction. Images whose source
is missing or too large are stored failed and announced (`bgremove.item.failed`),
uncharged (see `admission`). The same `request_id` again (a redelivery or a
client's retry) creates and charges nothing: its pending items are enqueued
again (de-duplicated by item id), and its acceptance and intake failures are
published again with the same event ids.
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

from lumiku_bgremover import billing, pricing
from lumiku_bgremover.contracts import (
    BatchAccepted,
    BatchRequested,
    ContractError,
    ImageInput,
    ImageRequested,
    RejectCode,
    WorkItem,
)
from lumiku_bgremover.contracts.codec import Identity, decode, peek_identity
from lumiku_bgremover.contracts.codes import FailCode
from lumiku_bgremover.contracts.common import PricingType, RequestMode
from lumiku_bgremover.db import batches as repo
from lumiku_bgremover.integrations.store import record_notification
from lumiku_bgremover.observability.logs import log_ids
from lumiku_bgremover.observability.recorder import FAILED, NO_ENGINE, PipelineMetrics
from lumiku_bgremover.observability.tracing import Tracing
from lumiku_bgremover.pipeline import admission
from lumiku_bgremover.pipeline.admission import Admission, Rejection, Request, images_of
from lumiku_bgremover.pipeline.announce import Announcer
from lumiku_bgremover.queue import WorkQueue
from lumiku_bgremover.services import Clock
from lumiku_bgremover.settings import Limits
from lumiku_bgremover.sources import ForbiddenSource, SourceLoader, SourceNotFound, SourceTooLarge

__all__ = ["Intake", "Rejection", "batch_id_for"]

log = logging.getLogger(__name__)

#: Concurrent size checks (object stats) per request.
STAT_CONCURRENCY = 16


def batch_id_for(request_id: str) -> str:
    """The batch id a request id always maps to (so retries meet the same batch)."""
    return "b_" + hashlib.sha256(request_id.encode()).hexdigest()[:24]


def _insufficient(short: billing.InsufficientCredits) -> Rejection:
    return Rejection(
        RejectCode.INSUFFICIENT_CREDITS,
        f"the balance is {short.balance} credits; {short.required} are required",
    )


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
        announcer: Announcer,
        queue: WorkQueue,
        *,
        limits: Limits,
        clock: Clock,
        timezone: ZoneInfo,
        metrics: PipelineMetrics,
        tracing: Tracing | None = None,
    ) -> None:
        self._pool, self._loader, self._announcer, self._queue = pool, loader, announcer, queue
        self._limits, self._clock, self._tz = limits, clock, timezone
        self._metrics, self._tracing = metrics, tracing or Tracing()

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
            await self._announcer.rejected(identity, error.code, error.message, error.path, key)
            return
        await self.submit(request)

    async def submit(self, request: Request) -> None:
        """Accept a decoded request, or publish `request.rejected` with why not."""
        ids = {"request_id": request.request_id, "user_id": request.user_id,
               "batch_id": batch_id_for(request.request_id)}  # fmt: skip
        with self._tracing.span("bgremove.intake", ids=ids), log_ids(**ids):
            await self._accept_or_reject(request)

    async def _accept_or_reject(self, request: Request) -> None:
        try:
            await self.accept(request)
        except Rejection as refusal:
            identity = Identity(request.request_id, request.user_id, request.correlation)
            await self._announcer.rejected(
                identity, refusal.code, refusal.message, refusal.path, request.request_id
            )

    async def accept(self, request: Request) -> repo.Batch:
        """Create (or find) the request's batch; raises `Rejection`."""
        existing = await self._existing(request)
        if existing is not None:
            return await self._resume(existing, request)
        admission.check_request(request, self._limits)
        checks = await self._check_sources(request)
        batch = await self._create(request, admission.admit(request, checks, self._limits))
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

    async def _check_sources(self, request: Request) -> list[admission.SourceCheck]:
        """Each image's size, or why it cannot run; transient storage errors propagate."""
        gate = asyncio.Semaphore(STAT_CONCURRENCY)

        async def check(index: int, image: ImageInput) -> admission.SourceCheck:
            async with gate:
                try:
                    size = await self._loader.size(image.ref, request.user_id)
                except ForbiddenSource as error:
                    path = f"{admission.image_path(request, index)}.ref"
                    raise Rejection(RejectCode.FORBIDDEN_SOURCE, str(error), path) from error
                except (SourceNotFound, SourceTooLarge) as error:
                    return admission.SourceFailure(error.code, str(error))
                return admission.judge_size(size, self._limits)

        images = images_of(request)
        return list(await asyncio.gather(*(check(i, im) for i, im in enumerate(images))))

    async def _create(self, request: Request, admitted: Admission) -> repo.Batch:
        batch_id = batch_id_for(request.request_id)
        async with self._pool.acquire() as conn, conn.transaction():
            priced = await self._pay(conn, request, batch_id, admitted.quote)
            created = await repo.insert_batch(
                conn,
                self._new_batch(request, batch_id, priced, admitted),
                self._new_items(request, batch_id, admitted),
            )
            if request.notify_email is not None:
                await record_notification(conn, batch_id, request.user_id, request.notify_email)
            batch = await repo.get_batch(conn, batch_id)
        assert batch is not None
        if not created:
            log.info(
                "request %s met its batch %s created concurrently", request.request_id, batch_id
            )
            return batch
        self._record_created(batch, admitted)
        return batch

    def _record_created(self, batch: repo.Batch, admitted: Admission) -> None:
        """The charge and the images failed at intake of a batch this call created."""
        tier = batch.tier.value
        if batch.credits_charged:
            self._metrics.charged(tier, batch.credits_charged)
        for failure in admitted.failures.values():
            self._metrics.item_finished(tier, NO_ENGINE, FAILED, failure.code.value)

    async def _pay(
        self, conn: billing.Conn, request: Request, batch_id: str, quote: pricing.BatchQuote
    ) -> Priced:
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

    def _new_batch(
        self, request: Request, batch_id: str, priced: Priced, admitted: Admission
    ) -> repo.NewBatch:
        quote = priced.quote
        single = isinstance(request, ImageRequested)
        return repo.NewBatch(
            id=batch_id, request_id=request.request_id, user_id=request.user_id,
            tier=request.tier, mode=RequestMode.SINGLE if single else RequestMode.BATCH,
            lane=admission.lane_for(request, self._limits), pricing_type=priced.pricing_type,
            total_items=len(images_of(request)), credits_per_image=quote.credits_per_image,
            base_total=quote.base_total, discount_pct=quote.discount_pct,
            discount=quote.discount, credits_charged=priced.charged,
            options=request.options, correlation=request.correlation,
            subscription_id=priced.subscription_id, quota_key=priced.quota_key,
            failed_at_intake=len(admitted.failures),
            then_upscale_scale=None if request.then_upscale is None else request.then_upscale.scale,
        )  # fmt: skip

    def _new_items(
        self, request: Request, batch_id: str, admitted: Admission
    ) -> list[repo.NewItem]:
        def failure(index: int) -> tuple[FailCode, str] | None:
            found = admitted.failures.get(index)
            return None if found is None else (found.code, found.message)

        return [
            repo.NewItem(
                id=item_id_for(batch_id, index),
                idx=index,
                filename=image.filename,
                source=image.ref,
                declared_size=image.size_bytes,
                failure=failure(index),
                source_id=image.source_id,
            )
            for index, image in enumerate(images_of(request))
        ]

    async def _resume(self, batch: repo.Batch, request: Request) -> repo.Batch:
        """Enqueue what is still pending and (re)announce the acceptance and intake failures."""
        async with self._pool.acquire() as conn:
            items = await repo.list_items(conn, batch.id)
        images = images_of(request)
        for item in items:
            if item.status is repo.ItemState.PENDING:
                await self._queue.enqueue(self._work_item(batch, request, images, item))
        await self._announcer.accepted(self._accepted(batch))
        at_intake = [
            item for item in items
            if item.status is repo.ItemState.FAILED and item.attempts == 0
            and item.announced_at is None
        ]  # fmt: skip
        for item in at_intake:
            await self._announcer.failed(batch, item, images[item.idx].source_id)
        if at_intake:
            async with self._pool.acquire() as conn:
                await repo.mark_items_announced(conn, [item.id for item in at_intake])
        return batch

    def _work_item(
        self, batch: repo.Batch, request: Request, images: Sequence[ImageInput], item: repo.Item
    ) -> WorkItem:
        image = images[item.idx]
        return WorkItem(
            item_id=item.id, batch_id=batch.id, user_id=batch.user_id, index=item.idx,
            tier=batch.tier, mode=batch.mode, filename=item.filename,
            ref=image.ref, options=request.options, lane=batch.lane,
            size_bytes=image.size_bytes, then_upscale=request.then_upscale,
            source_id=image.source_id, correlation=request.correlation,
            enqueued_at=self._clock(),
        )  # fmt: skip

    def _accepted(self, batch: repo.Batch) -> BatchAccepted:
        priced = batch.priced_items
        quote = pricing.quote_batch(batch.tier, priced, max_images=max(500, priced))
        return BatchAccepted(
            request_id=batch.request_id, batch_id=batch.id, user_id=batch.user_id,
            tier=batch.tier, mode=batch.mode, count=batch.total_items, priced_count=priced,
            pricing_type=batch.pricing_type, credits_charged=batch.credits_charged,
            discount_pct=batch.discount_pct,
            per_image=quote.per_image_str if batch.credits_charged else "0",
            lane=batch.lane, correlation=batch.correlation, accepted_at=batch.created_at,
        )  # fmt: skip


def item_id_for(batch_id: str, index: int) -> str:
    """The id of a batch's `index`-th image."""
    return f"{batch_id}-{index:03d}"
