"""Completion e-mails: one per finished batch whose request named an address.

The address was recorded with the batch (`batch_notifications`). On
`bgremove.batch.completed` the record is locked, the e-mail sent and the record
marked sent in one transaction, so a redelivered event, or a second notifier
replica, finds it sent and sends nothing. A refused send is counted and raises
`SendFailedError`; the handler NAKs with `retry_delay` so the event comes back later.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from email.message import EmailMessage

import asyncpg

from lumiku_bgremover.contracts import BatchCompleted, ContractError, decode
from lumiku_bgremover.integrations import store
from lumiku_bgremover.integrations.mailer import Mailer, MailError
from lumiku_bgremover.services import Clock

log = logging.getLogger(__name__)


class SendFailedError(Exception):
    """The e-mail was not accepted; `attempts` sends have failed so far."""

    def __init__(self, attempts: int, message: str) -> None:
        super().__init__(message)
        self.attempts = attempts


def retry_delay(attempts: int, *, base_s: float, most_s: float) -> float:
    """Seconds before the next try: base * 2^(attempts-1), at most `most_s`."""
    return min(most_s, base_s * float(2 ** max(0, attempts - 1)))


def _lines(done: BatchCompleted) -> list[str]:
    paid = done.credits_charged - done.credits_refunded
    lines = [
        f"Your background removal batch {done.batch_id} is {done.status.value}.",
        "",
        (
            f"Images: {done.total} in all, {done.succeeded} done, {done.failed} failed, "
            f"{done.cancelled} cancelled."
        ),
        (
            f"Credits: {done.credits_charged} charged, {done.credits_refunded} refunded "
            f"({paid} paid)."
        ),
    ]
    if done.archive_url is not None:
        lines += ["", f"Download all results (ZIP): {done.archive_url}"]
        if done.archive_url_expires_at is not None:
            lines.append(f"The link works until {done.archive_url_expires_at.isoformat()}.")
    if done.correlation is not None:
        lines += ["", f"Started from {done.correlation.app} ({done.correlation.ref})."]
    return lines


def compose(done: BatchCompleted, *, to: str, sender: str) -> EmailMessage:
    """The e-mail for a finished batch: counts, credits, the ZIP link."""
    message = EmailMessage()
    message["Subject"] = (
        f"Background removal {done.status.value}: {done.succeeded} of {done.total} images"
    )
    message["From"], message["To"] = sender, to
    message["Message-ID"] = f"<{done.batch_id}.completed@lumiku-bgremover>"
    message.set_content("\n".join(_lines(done)) + "\n")
    return message


@dataclass(frozen=True, slots=True)
class Notifier:
    """The `notifier` role's use case."""

    pool: asyncpg.Pool
    mailer: Mailer
    sender: str
    clock: Clock

    async def on_completed(self, data: bytes) -> bool:
        """Handle a raw `batch.completed` body; True when an e-mail went out now.

        Raises `SendFailedError` when the mail server did not take it (retry later).
        """
        try:
            done = decode(BatchCompleted, data)
        except ContractError as error:
            log.warning("unreadable batch.completed ignored: %s %s", error.code, error.message)
            return False
        return await self._notify(done)

    async def _notify(self, done: BatchCompleted) -> bool:
        failure: SendFailedError | None = None
        async with self.pool.acquire() as conn, conn.transaction():
            note = await store.lock_notification(conn, done.batch_id)
            if note is None or note.sent_at is not None:
                return False
            try:
                await self.mailer.send(compose(done, to=note.email, sender=self.sender))
            except MailError as error:
                attempts = await store.mark_failed(conn, done.batch_id, str(error))
                failure = SendFailedError(attempts, str(error))
            else:
                await store.mark_sent(conn, done.batch_id, self.clock())
        if failure is not None:
            log.warning("e-mail for batch %s failed (attempt %d): %s",
                        done.batch_id, failure.attempts, failure)  # fmt: skip
            raise failure
        log.info("e-mailed the completion of batch %s", done.batch_id)
        return True
