"""Request-reply over core NATS: every request gets exactly one encoded answer.

`respond` decodes the raw body as the request contract, awaits the answer and
encodes it. A body that breaks its contract, or a `ContractError` raised by the
answer, becomes an `ErrorReply` with its code; anything else is logged and
answered `internal_error`. Nothing escapes to FastStream, so a requester never
waits for a timeout because of a bad body or a failing dependency.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Final, TypeVar

import msgspec
from faststream import Context

from lumiku_bgremover.contracts import ContractError, ErrorReply, RejectCode, decode, encode
from lumiku_bgremover.services import SERVICES_KEY, Services

__all__ = ["INTERNAL_ERROR_MESSAGE", "InjectedServices", "internal_error", "respond"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: A handler parameter FastStream fills with the app's `Services` (set in the lifespan).
InjectedServices = Annotated[Services, Context(SERVICES_KEY)]

#: What a requester is told when the service failed (details are in the service log).
INTERNAL_ERROR_MESSAGE: Final = "the service failed to answer; nothing was charged"


def internal_error() -> ErrorReply:
    """The answer to a request the service could not handle."""
    return ErrorReply(code=RejectCode.INTERNAL_ERROR, message=INTERNAL_ERROR_MESSAGE)


async def respond(
    kind: type[T],
    body: bytes,
    answer: Callable[[T], Awaitable[msgspec.Struct]],
    *,
    subject: str,
) -> bytes:
    """The encoded answer to `body` (a `kind` request): the reply or an `ErrorReply`."""
    try:
        request = decode(kind, body)
        return encode(await answer(request))
    except ContractError as error:
        return encode(error.to_error_reply())
    except Exception:
        log.exception("request on %s failed", subject)
        return encode(internal_error())
