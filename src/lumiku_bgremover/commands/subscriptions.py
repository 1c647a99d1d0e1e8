"""`lumiku-bgremover subscription set|show`: subscriptions, straight on the database."""

from __future__ import annotations

import argparse
from zoneinfo import ZoneInfo

from lumiku_bgremover import admin
from lumiku_bgremover.commands.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    database,
    report,
    request_of,
    rows,
    show,
    when,
)
from lumiku_bgremover.contracts import (
    ContractError,
    Plan,
    SubscriptionReply,
    SubscriptionSetRequest,
    SubscriptionShowRequest,
)
from lumiku_bgremover.services import Clock, utc_now
from lumiku_bgremover.settings import Settings

__all__ = ["DEFAULT_DAYS", "add_arguments", "format_subscription", "run"]

#: Length of a subscription set without `--days`.
DEFAULT_DAYS = 30


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`set --user --plan [--days]` and `show --user`."""
    actions = parser.add_subparsers(dest="action", required=True)
    put = actions.add_parser("set", help="give a user a plan from now (replaces an active one)")
    put.add_argument("--user", required=True, help="user id")
    put.add_argument("--plan", required=True, choices=[p.value for p in Plan])
    put.add_argument("--days", type=int, default=DEFAULT_DAYS, help="length in days (1..366)")
    put.add_argument("--json", action="store_true", help="print the reply as JSON")
    get = actions.add_parser("show", help="a user's active subscription and today's quota")
    get.add_argument("--user", required=True, help="user id")
    get.add_argument("--json", action="store_true", help="print the reply as JSON")


def format_subscription(reply: SubscriptionReply, tz: ZoneInfo) -> str:
    """The subscription and today's quota as readable rows."""
    sub = reply.subscription
    if sub is None:
        return f"{reply.user_id} has no active subscription"
    pairs = [
        ("user", reply.user_id),
        ("plan", f"{sub.plan} ({sub.status})"),
        ("from", when(sub.started_at, tz)),
        ("until", when(sub.expires_at, tz)),
        ("tiers", ", ".join(sub.allowed_tiers)),
        ("daily quota", str(sub.daily_quota)),
        ("today", f"{reply.business_date}: {reply.quota_used} used, {reply.quota_left} left"),
    ]
    if sub.professional_quota is not None:
        pro = f"{reply.professional_used} used, {reply.professional_left} left"
        pairs.append(("professional", f"{sub.professional_quota} a day; {pro}"))
    return rows(pairs)


def _request(args: argparse.Namespace) -> SubscriptionSetRequest | SubscriptionShowRequest:
    if args.action == "set":
        return request_of(SubscriptionSetRequest, user_id=args.user, plan=args.plan, days=args.days)
    return request_of(SubscriptionShowRequest, user_id=args.user)


async def _answer(
    settings: Settings, request: SubscriptionSetRequest | SubscriptionShowRequest, clock: Clock
) -> SubscriptionReply:
    tz, now = settings.timezone, clock()
    async with database(settings) as conn:
        if isinstance(request, SubscriptionSetRequest):
            return await admin.set_subscription(conn, request, now=now, tz=tz)
        return await admin.show_subscription(conn, request, now=now, tz=tz)


async def run(settings: Settings, args: argparse.Namespace, *, clock: Clock = utc_now) -> int:
    """Run `subscription set` or `subscription show`; 2 for arguments breaking the contract."""
    try:
        request = _request(args)
    except ContractError as error:
        report(error)
        return EXIT_USAGE
    try:
        reply = await _answer(settings, request, clock)
    except ContractError as error:
        report(error)
        return EXIT_FAILED
    show(reply, format_subscription(reply, settings.timezone), as_json=args.json)
    return EXIT_OK
