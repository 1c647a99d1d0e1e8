"""Sending e-mail: a `Mailer` Protocol, an SMTP implementation and an in-memory fake.

`SmtpMailer` speaks SMTP with STARTTLS and authentication (from `SmtpSettings`);
`smtplib` blocks, so each send runs in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from email.message import EmailMessage
from typing import Protocol

from lumiku_bgremover.integration_settings import SmtpSettings


class MailError(Exception):
    """The message was not accepted (the server refused it, or could not be reached)."""


class Mailer(Protocol):
    """Hands one message to a mail server; raises `MailError` when it was not accepted."""

    async def send(self, message: EmailMessage) -> None:
        """Send `message`."""
        ...


class SmtpMailer:
    """Sends through an SMTP server: STARTTLS (when configured), then login (when set)."""

    def __init__(self, settings: SmtpSettings) -> None:
        self._settings = settings

    async def send(self, message: EmailMessage) -> None:
        """Send `message` from a worker thread."""
        try:
            await asyncio.to_thread(self._send, message)
        except (smtplib.SMTPException, OSError) as error:
            raise MailError(f"{type(error).__name__}: {error}") from error

    def _send(self, message: EmailMessage) -> None:
        smtp = self._settings
        with smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout_s) as client:
            client.ehlo()
            if smtp.starttls:
                cafile = str(smtp.ca_file) if smtp.ca_file else None
                client.starttls(context=ssl.create_default_context(cafile=cafile))
                client.ehlo()
            if smtp.user is not None and smtp.password is not None:
                client.login(smtp.user, smtp.password)
            client.send_message(message)


class InMemoryMailer:
    """Keeps sent messages; refuses the first `refuse` sends (for retry tests)."""

    def __init__(self, *, refuse: int = 0) -> None:
        self.sent: list[EmailMessage] = []
        self.refuse = refuse

    async def send(self, message: EmailMessage) -> None:
        """Record `message`, or raise `MailError` while refusals are left."""
        if self.refuse > 0:
            self.refuse -= 1
            raise MailError("451 try again later")
        self.sent.append(message)
