"""Dead letters: items whose last delivery ended without an answer become failed items."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import msgspec
import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from lumiku_bgremover.contracts.codec import ContractError, decode
from lumiku_bgremover.contracts.codes import FailCode
from lumiku_bgremover.contracts.work import WorkItem
from lumiku_bgremover.provisioning import StreamNames, dead_letter_consumer_config
from lumiku_bgremover.queue.base import Processor
from lumiku_bgremover.queue.runner import RECOVER_S, cancel_all
from lumiku_bgremover.queue.scheduling import backoff_delay
from lumiku_bgremover.settings import NatsSettings

log = logging.getLogger(__name__)


class DeadLetterMover:
    """Turns max-deliveries advisories into failed items and removes the stuck message."""

    def __init__(
        self,
        js: JetStreamContext,
        settings: NatsSettings,
        processor: Processor,
        *,
        poll_s: float = 5.0,
    ) -> None:
        self._js, self._names, self._processor = js, StreamNames.of(settings), processor
        self._settings, self._poll_s = settings, poll_s
        self._task: asyncio.Task[None] | None = None
        self._sub: JetStreamContext.PullSubscription | None = None
        self._stopping = False

    async def start(self) -> None:
        """Bind to the advisory stream's durable consumer and start moving."""
        durable = dead_letter_consumer_config(self._settings).durable_name
        self._sub = await self._js.pull_subscribe_bind(
            durable=durable, stream=self._names.dead_letters
        )
        self._task = asyncio.create_task(self._run(self._sub))

    async def stop(self) -> None:
        """Stop after the advisory in hand."""
        self._stopping = True
        if self._task is not None:
            await cancel_all({self._task})
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    async def _run(self, sub: JetStreamContext.PullSubscription) -> None:
        while not self._stopping:
            try:
                advisories = await sub.fetch(1, timeout=self._poll_s)
            except nats.errors.TimeoutError:
                continue
            except Exception:  # keep moving dead letters after a hiccup
                log.warning("dead-letter fetch failed; retrying", exc_info=True)
                await asyncio.sleep(RECOVER_S)
                continue
            for advisory in advisories:
                await self._move(advisory)

    async def _move(self, advisory: Msg) -> None:
        try:
            seq = msgspec.json.decode(advisory.data, type=dict[str, object]).get("stream_seq")
            if isinstance(seq, int):
                await self._give_up(seq)
        except Exception:
            log.exception("dead letter %s not moved yet", advisory.data[:200])
            await advisory.nak(delay=backoff_delay(advisory.metadata.num_delivered))
            return
        await advisory.ack()

    async def _give_up(self, seq: int) -> None:
        try:
            stored = await self._js.get_msg(self._names.work, seq)
        except NotFoundError:
            return  # acked or moved already
        try:
            item = decode(WorkItem, stored.data or b"")
        except ContractError:
            log.exception("dead letter %d is not a WorkItem; deleted", seq)
        else:
            await self._processor.give_up(
                item, code=FailCode.MAX_DELIVERIES, message="no answer within the delivery limit"
            )
        await self._js.delete_msg(self._names.work, seq)
