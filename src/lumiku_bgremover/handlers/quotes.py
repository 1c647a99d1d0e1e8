"""The quote subject: price a request and say whether the user can pay it now."""

from __future__ import annotations

from typing import Final

from faststream.nats import NatsBroker

from lumiku_bgremover import billing
from lumiku_bgremover.contracts import ContractError, QuoteReply, QuoteRequest, RejectCode
from lumiku_bgremover.contracts.subjects import QUOTE, with_prefix
from lumiku_bgremover.handlers.replying import respond
from lumiku_bgremover.pricing import InvalidCount, PricingError, UnknownTier
from lumiku_bgremover.services import SERVICES_KEY, Services
from lumiku_bgremover.settings import Settings

__all__ = [
    "QUOTE_QUEUE",
    "QUOTE_WORKERS",
    "answer_quote",
    "pricing_error",
    "quote",
    "register_quote_handler",
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


def register_quote_handler(broker: NatsBroker, settings: Settings) -> None:
    """Subscribe the quote subject (under the deployment prefix) in the queue group,
    answering up to `QUOTE_WORKERS` requests at once."""

    subject = with_prefix(settings.nats.subject_prefix, QUOTE)

    # No FastStream `Context` parameters here: fast_depends resolves each one with a
    # sync call in a worker thread, a thread hop per request on the busiest subject.
    @broker.subscriber(subject, queue=QUOTE_QUEUE, max_workers=QUOTE_WORKERS)
    async def on_quote(body: bytes) -> bytes:
        # read at call time: the app gives the broker its context after registration
        return await answer_quote(broker.context.get(SERVICES_KEY), body)
