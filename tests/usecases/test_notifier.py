"""Completion e-mails through a real local SMTP server (STARTTLS, auth): exactly one per
batch that named an address, also on redelivery and after refused attempts."""

import msgspec
import pytest

from lumiku_bgremover.contracts import subjects
from lumiku_bgremover.integrations.mailer import SmtpMailer
from lumiku_bgremover.integrations.notify import Notifier, SendFailedError, retry_delay
from tests.fixtures.smtp import SmtpServer
from tests.integration.service import pinned_clock
from tests.usecases.conftest import Wired, png
from tests.usecases.test_intake import batch_body

pytestmark = pytest.mark.integration


async def completed_batch(wired: Wired, user: str, **extra: object) -> bytes:
    await wired.grant(user, 100)
    refs = [await wired.upload(user, f"p{i}.png", png()) for i in range(2)]
    refs.append({"bucket": "lumiku-bgremover", "key": f"originals/{user}/gone.png"})
    await wired.intake.on_batch(batch_body(f"r-{user}", user, refs, **extra))
    await wired.work_all()
    [completed] = wired.events.of(subjects.BATCH_COMPLETED)
    return msgspec.json.encode(completed)


def notifier(wired: Wired, smtp: SmtpServer) -> Notifier:
    return Notifier(wired.pool, SmtpMailer(smtp.settings), smtp.settings.sender, pinned_clock())


async def test_one_email_per_batch_even_when_redelivered(
    wired: Wired, smtp_server: SmtpServer
) -> None:
    body = await completed_batch(wired, "ann", notify_email="ann@example.com")
    sent = [await notifier(wired, smtp_server).on_completed(body) for _ in range(3)]
    assert sent == [True, False, False]
    [mail] = smtp_server.mailbox.wait_for(1)
    assert mail["To"] == "ann@example.com"
    text = mail.get_payload()
    assert isinstance(text, str)
    assert "2 done, 1 failed" in text
    assert "16 charged, 0 refunded" in text
    assert "Download all results (ZIP): " in text


@pytest.mark.parametrize("smtp_server", [2], indirect=True)
async def test_a_refusing_server_is_retried_until_it_takes_the_mail(
    wired: Wired, smtp_server: SmtpServer
) -> None:
    body = await completed_batch(wired, "bob", notify_email="bob@example.com")
    attempts = []
    for _ in range(2):
        with pytest.raises(SendFailedError) as failed:
            await notifier(wired, smtp_server).on_completed(body)
        attempts.append(failed.value.attempts)
    assert attempts == [1, 2]
    assert await notifier(wired, smtp_server).on_completed(body) is True
    assert await notifier(wired, smtp_server).on_completed(body) is False
    assert len(smtp_server.mailbox.wait_for(1)) == 1
    row = await wired.pool.fetchrow("SELECT attempts, sent_at FROM batch_notifications")
    assert row is not None
    assert row["attempts"] == 3
    assert row["sent_at"] is not None


async def test_no_address_no_email(wired: Wired, smtp_server: SmtpServer) -> None:
    body = await completed_batch(wired, "cat")
    assert await notifier(wired, smtp_server).on_completed(body) is False
    assert await notifier(wired, smtp_server).on_completed(b"{broken") is False
    assert smtp_server.mailbox.messages == []


def test_retry_delays_grow_and_are_capped() -> None:
    assert [retry_delay(n, base_s=30, most_s=100) for n in (1, 2, 3, 4)] == [30, 60, 100, 100]
