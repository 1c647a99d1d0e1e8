"""The quote subject: price a request and say whether the user can pay it now.

Served by a `PlainResponder` (a plain nats-py subscription), not a FastStream
subscriber: FastStream's per-message path cost more than the quote (bench B3).
"""

from __future__ import annotations

from typing import Final

from nats.aio.client import Client
from prometheus_client import Counter

from lumiku_bgremover import billing
from lumiku_bgremover.contracts import ContractError, QuoteReply, QuoteRequest, RejectCode
from lumiku_bgremover.contracts.subjects import QUOTE, with_prefix
from lumiku_bgremover.handlers.plain import PlainResponder
from lumiku_bgremover.handlers.replying import respond
from lumiku_bgremover.observability.tracing import Tracing
from lumiku_bgremover.pricing import InvalidCount, PricingError, UnknownTier
from lumiku_bgremover.services import Services

__all__ = [
    "QUOTE_QUEUE",
    "QUOTE_WORKERS",
    "answer_quote",
    "pricing_error",
    "quote",
    "quote_responder",
]

#: Core-NATS queue group: replicas share the quote subject, each request answered once.
QUOTE_QUEUE: Final = "bgremove-quote"
#: Quotes one replica answers at once (a quote waits on one query; the database pool
#: bounds how many of them run at a time, the rest wait for a connection).
QUOTE_WORKERS: Final = 64


def pricing_error(error: PricingError) -> ContractError:
    """The `ContractError` (code, message, JSON path) a pricing refusal answers with."""
    if isinstance(error, UnknownTier):
        return ContractError(RejectCode.UNKNOWN_TIER, str(error), "$.tier")
    if isinstance(error, InvalidCount):
        too_many = isinstance(error.count, int) and error.count > error.max_images
        code = RejectCode.TOO_MANY_IMAGES if too_many else RejectCode.INVALID_REQUEST
        return ContractError(code, str(error), "$.count")
    return ContractError(RejectCode.INVALID_REQUEST, str(error))


async def quote(services: Services, request: QuoteRequest) -> QuoteReply:
    """Price `request` at the services' clock, within the configured image limit."""
    async with services.pool.acquire() as conn:
        try:
            return await billing.build_quote(
                conn,
                request,
                now=services.clock(),
                tz=services.settings.timezone,
                max_images=services.settings.limits.max_images,
            )
        except PricingError as error:
            raise pricing_error(error) from error


async def answer_quote(services: Services, body: bytes) -> bytes:
    """The encoded `QuoteReply` or `ErrorReply` to a raw quote request."""

    async def answer(request: QuoteRequest) -> QuoteReply:
        return await quote(services, request)

    return await respond(QuoteRequest, body, answer, subject=QUOTE)


def quote_responder(
    nc: Client,
    services: Services,
    *,
    tracing: Tracing | None = None,
    counter: Counter | None = None,
) -> PlainResponder:
    """The quote subject (under the deployment prefix) on a plain nats-py subscription
    in the queue group, answering up to `QUOTE_WORKERS` requests at once."""

    async def answer(body: bytes) -> bytes:
        return await answer_quote(services, body)  # looked up per call: tests wrap it

    subject = with_prefix(services.settings.nats.subject_prefix, QUOTE)
    return PlainResponder(
        nc, subject, QUOTE_QUEUE, answer, limit=QUOTE_WORKERS, tracing=tracing, counter=counter
    )
