"""`lumiku-bgremover quote`: ask a running service for a quote over NATS request-reply."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any, Final

import nats
import nats.errors
from nats.aio.client import Client

from lumiku_bgremover import messaging
from lumiku_bgremover.commands.common import (
    EXIT_FAILED,
    EXIT_OK,
    error_text,
    rows,
    shout,
    show,
)
from lumiku_bgremover.contracts import (
    ContractError,
    ErrorReply,
    PricingType,
    QuoteReply,
    QuoteRequest,
    RequestMode,
    Tier,
    decode_reply,
    encode,
)
from lumiku_bgremover.contracts.subjects import QUOTE, with_prefix
from lumiku_bgremover.settings import NatsSettings, Settings

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "NoService",
    "add_arguments",
    "format_quote",
    "request_quote",
    "run",
]

#: Seconds to wait for the service's answer (and for the NATS connection).
DEFAULT_TIMEOUT_S: Final = 5.0
#: Pause between requests answered "no responders" (until the timeout passes).
RETRY_PAUSE_S: Final = 0.05


class NoService(Exception):  # noqa: N818 (it is not an error of ours: nobody answered)
    """Nobody answered on the quote subject (no responders, or a timeout)."""

    def __init__(self, subject: str) -> None:
        self.subject = subject
        super().__init__(f"no service answered on {subject}: is `lumiku-bgremover run` up?")


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


async def _quiet(_: Exception) -> None:
    """Connection errors surface as the exception of the failing call."""


async def _connect(settings: NatsSettings, wait_s: float) -> Client:
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


async def _ask(nc: Client, subject: str, body: bytes, wait_s: float) -> bytes:
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


async def request_quote(
    settings: NatsSettings, request: QuoteRequest, *, wait_s: float = DEFAULT_TIMEOUT_S
) -> QuoteReply | ErrorReply:
    """Send `request` to the quote subject and decode the answer; `NoService` if none."""
    subject = with_prefix(settings.subject_prefix, QUOTE)
    nc = await _connect(settings, wait_s)
    try:
        data = await _ask(nc, subject, encode(request), wait_s)
    finally:
        await nc.close()
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
    try:
        reply = await request_quote(settings.nats, request, wait_s=args.timeout)
    except NoService as error:
        shout(str(error))
        return EXIT_FAILED
    except (OSError, TimeoutError, nats.errors.Error) as error:
        shout(f"cannot reach NATS at {', '.join(settings.nats.servers)}: {error!r}")
        return EXIT_FAILED
    except ContractError as error:
        shout(f"the service answered something unreadable: {error}")
        return EXIT_FAILED
    if isinstance(reply, ErrorReply):
        if args.json:
            show(reply, "", as_json=True)
        else:
            shout(error_text(reply))
        return EXIT_FAILED
    show(reply, format_quote(request.user_id, reply), as_json=args.json)
    return EXIT_OK
