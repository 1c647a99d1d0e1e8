"""Asking a running service over core NATS request-reply, and printing its answer."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import msgspec
import nats
import nats.errors
from nats.aio.client import Client

from lumiku_bgremover import messaging
from lumiku_bgremover.commands.common import EXIT_FAILED, EXIT_OK, error_text, shout, show
from lumiku_bgremover.contracts import ContractError, ErrorReply
from lumiku_bgremover.contracts.subjects import with_prefix
from lumiku_bgremover.settings import NatsSettings

__all__ = ["DEFAULT_TIMEOUT_S", "RETRY_PAUSE_S", "NoService", "ask", "request_reply", "show_answer"]

#: Seconds to wait for the service's answer (and for the NATS connection).
DEFAULT_TIMEOUT_S: Final = 5.0
#: Pause between requests answered "no responders" (until the timeout passes).
RETRY_PAUSE_S: Final = 0.05

T = TypeVar("T", bound=msgspec.Struct)


class NoService(Exception):  # noqa: N818 (it is not an error of ours: nobody answered)
    """Nobody answered on a subject (no responders, or a timeout)."""

    def __init__(self, subject: str) -> None:
        self.subject = subject
        super().__init__(f"no service answered on {subject}: is `lumiku-bgremover run` up?")


async def _quiet(_: Exception) -> None:
    """Connection errors surface as the exception of the failing call."""


async def connect(settings: NatsSettings, wait_s: float) -> Client:
    """A short-lived client: no reconnect loop, so a missing server fails fast."""
    options: dict[str, Any] = messaging.connect_options(
        settings, name=f"{messaging.CLIENT_NAME}-cli"
    )
    options |= {
        "allow_reconnect": False,
        "max_reconnect_attempts": 1,
        "connect_timeout": wait_s,
        "error_cb": _quiet,
    }
    return await asyncio.wait_for(nats.connect(**options), timeout=wait_s + 1)


async def ask(nc: Client, subject: str, body: bytes, wait_s: float) -> bytes:
    """One answer within `wait_s`; "no responders" is retried until then (a subscriber
    can be invisible for a moment after it subscribed, or during a rolling restart)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:
        try:
            msg = await nc.request(subject, body, timeout=max(deadline - loop.time(), 0.001))
        except nats.errors.NoRespondersError as error:
            if loop.time() + RETRY_PAUSE_S >= deadline:
                raise NoService(subject) from error
            await asyncio.sleep(RETRY_PAUSE_S)
        except nats.errors.TimeoutError as error:
            raise NoService(subject) from error
        else:
            return msg.data


async def request_reply(
    settings: NatsSettings, subject: str, body: bytes, *, wait_s: float = DEFAULT_TIMEOUT_S
) -> bytes:
    """One answer on `subject` (base name; the prefix is added) within `wait_s`."""
    nc = await connect(settings, wait_s)
    try:
        return await ask(nc, with_prefix(settings.subject_prefix, subject), body, wait_s)
    finally:
        await nc.close()


async def show_answer(
    settings: NatsSettings,
    answer: Awaitable[T | ErrorReply],
    render: Callable[[T], str],
    *,
    as_json: bool,
) -> int:
    """Await `answer` and print it; 0 for a reply, 1 for an error reply or no answer."""
    try:
        reply = await answer
    except NoService as error:
        shout(str(error))
        return EXIT_FAILED
    except (OSError, TimeoutError, nats.errors.Error) as error:
        shout(f"cannot reach NATS at {', '.join(settings.servers)}: {error!r}")
        return EXIT_FAILED
    except ContractError as error:
        shout(f"the service answered something unreadable: {error}")
        return EXIT_FAILED
    if isinstance(reply, ErrorReply):
        if as_json:
            show(reply, "", as_json=True)
        else:
            shout(error_text(reply))
        return EXIT_FAILED
    show(reply, render(reply), as_json=as_json)
    return EXIT_OK
