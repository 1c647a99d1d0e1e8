"""The answers a request gets: rejected, accepted, and images failed at intake or later.

Event ids are derived from what each event is about, so a re-publish (a
redelivered request, a recovered crash) is the same event and JetStream drops it.
"""

from __future__ import annotations

import logging
from datetime import datetime

from lumiku_bgremover.contracts import BatchAccepted, ItemFailed, RequestRejected, subjects
from lumiku_bgremover.contracts.codec import Identity
from lumiku_bgremover.contracts.codes import FailCode, RejectCode
from lumiku_bgremover.contracts.common import RequestMode
from lumiku_bgremover.db import batches as repo
from lumiku_bgremover.pipeline.events import Publisher
from lumiku_bgremover.services import Clock

log = logging.getLogger(__name__)


def one_line(text: str, fallback: str) -> str:
    """Event messages are one line of at most 2,000 characters."""
    return " ".join(text.split())[:2000] or fallback


class Announcer:
    """Builds and publishes the request-level events of the pipeline."""

    def __init__(self, publisher: Publisher, *, clock: Clock) -> None:
        self._publisher, self._clock = publisher, clock

    async def rejected(
        self,
        identity: Identity,
        code: RejectCode,
        message: str,
        path: str | None,
        key: str,
        *,
        batch_id: str | None = None,
    ) -> None:
        """`request.rejected`; `key` names the request (one event per request and code)."""
        log.info("request %s rejected: %s %s", identity.request_id or batch_id, code, message)
        event = RequestRejected(
            request_id=identity.request_id, user_id=identity.user_id, batch_id=batch_id,
            code=code, message=one_line(message, code.value), path=path,
            correlation=identity.correlation, rejected_at=self._clock(),
        )  # fmt: skip
        await self._publisher.publish(subjects.REQUEST_REJECTED, event, key=f"{key}:{code}")

    async def accepted(self, event: BatchAccepted) -> None:
        """`batch.accepted`, once per batch."""
        await self._publisher.publish(subjects.BATCH_ACCEPTED, event, key=event.batch_id)

    async def failed(
        self, batch: repo.Batch, item: repo.Item, source_id: str | None = None
    ) -> None:
        """`item.failed` for a stored failed item (its code, message and time as stored)."""
        await self.item_failed(
            batch, item_id=item.id, index=item.idx, filename=item.filename,
            code=item.error_code or FailCode.INTERNAL_ERROR,
            message=item.error_message or "", failed_at=item.finished_at,
            source_id=source_id,
        )  # fmt: skip

    async def item_failed(
        self,
        batch: repo.Batch,
        *,
        item_id: str,
        index: int,
        filename: str,
        code: FailCode,
        message: str,
        failed_at: datetime | None = None,
        source_id: str | None = None,
    ) -> None:
        """`item.failed`; a single image's refund is its whole price, a batch image's 0.

        `source_id` is the requester's id of the image (an avatar id), as in `item.done`.
        """
        refund = batch.credits_charged if batch.mode is RequestMode.SINGLE else 0
        event = ItemFailed(
            batch_id=batch.id, item_id=item_id, user_id=batch.user_id, index=index,
            filename=filename, code=code, message=one_line(message, code.value),
            credits_refunded=refund, correlation=batch.correlation, source_id=source_id,
            failed_at=failed_at or self._clock(),
        )  # fmt: skip
        await self._publisher.publish(subjects.ITEM_FAILED, event, key=item_id)
