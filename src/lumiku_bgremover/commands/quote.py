"""`lumiku-bgremover quote`: ask a running service for a quote over NATS request-reply."""

from __future__ import annotations

import argparse

from lumiku_bgremover.commands.asking import (
    DEFAULT_TIMEOUT_S,
    NoService,
    request_reply,
    show_answer,
)
from lumiku_bgremover.commands.common import rows
from lumiku_bgremover.contracts import (
    ErrorReply,
    PricingType,
    QuoteReply,
    QuoteRequest,
    RequestMode,
    Tier,
    decode_reply,
    encode,
)
from lumiku_bgremover.contracts.subjects import QUOTE
from lumiku_bgremover.settings import NatsSettings, Settings

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "NoService",
    "add_arguments",
    "format_quote",
    "request_quote",
    "run",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`--user`, `--tier`, `--count`, `--mode`, `--timeout`, `--json`."""
    parser.add_argument("--user", required=True, help="user id")
    parser.add_argument("--tier", required=True, choices=[t.value for t in Tier])
    parser.add_argument("--count", required=True, type=int, help="number of images")
    parser.add_argument(
        "--mode", choices=[m.value for m in RequestMode], default=RequestMode.BATCH.value
    )
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds to wait for the answer"
    )
    parser.add_argument("--json", action="store_true", help="print the raw JSON reply")


async def request_quote(
    settings: NatsSettings, request: QuoteRequest, *, wait_s: float = DEFAULT_TIMEOUT_S
) -> QuoteReply | ErrorReply:
    """Send `request` to the quote subject and decode the answer; `NoService` if none."""
    data = await request_reply(settings, QUOTE, encode(request), wait_s=wait_s)
    return decode_reply(QuoteReply, data)


def _price_rows(reply: QuoteReply) -> list[tuple[str, str]]:
    if reply.pricing_type is PricingType.SUBSCRIPTION:
        return [("price", "0 credits: one unit of today's subscription quota")]
    base = f"{reply.credits_per_image} credits x {reply.count} = {reply.base_total}"
    return [
        ("price", f"{base}, discount {reply.discount_pct}% (-{reply.discount})"),
        ("total", f"{reply.total} credits ({reply.per_image} per image)"),
    ]


def format_quote(user_id: str, reply: QuoteReply) -> str:
    """The quote as aligned, readable rows."""
    pairs = [("quote", f"{reply.count} x {reply.tier} ({reply.mode}) for {user_id}")]
    pairs += _price_rows(reply)
    pairs.append(("paid by", str(reply.pricing_type)))
    enough = "sufficient" if reply.sufficient else "insufficient"
    pairs.append(("balance", f"{reply.balance} credits ({enough})"))
    if reply.quota_left is not None:
        pairs.append(("quota today", f"{reply.quota_used} used, {reply.quota_left} left"))
    pairs.append(("accepted", "yes" if reply.accepted else f"no: {reply.reason}"))
    return rows(pairs)


async def run(settings: Settings, args: argparse.Namespace) -> int:
    """Ask, print the answer; 0 for a quote, 1 for an error reply or no answer."""
    request = QuoteRequest(
        user_id=args.user, tier=Tier(args.tier), count=args.count, mode=RequestMode(args.mode)
    )
    return await show_answer(
        settings.nats,
        request_quote(settings.nats, request, wait_s=args.timeout),
        lambda reply: format_quote(request.user_id, reply),
        as_json=args.json,
    )
