"""`lumiku-bgremover credits grant|balance`: the credit ledger, straight on the database."""

from __future__ import annotations

import argparse
import uuid

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
)
from lumiku_bgremover.contracts import (
    ContractError,
    CreditBalanceReply,
    CreditBalanceRequest,
    CreditGrantReply,
    CreditGrantRequest,
    GrantReason,
)
from lumiku_bgremover.settings import Settings

__all__ = ["add_arguments", "format_grant", "new_key", "run"]


def new_key() -> str:
    """A fresh idempotency key for a grant (printed, so a retry can reuse it)."""
    return f"cli-grant-{uuid.uuid4().hex}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`grant --user --amount [--key] [--reason]` and `balance --user`."""
    actions = parser.add_subparsers(dest="action", required=True)
    grant = actions.add_parser("grant", help="add credits, once per idempotency key")
    grant.add_argument("--user", required=True, help="user id")
    grant.add_argument("--amount", required=True, type=int, help="credits to add (> 0)")
    grant.add_argument("--key", help="idempotency key (default: a fresh one, printed)")
    grant.add_argument(
        "--reason", choices=[r.value for r in GrantReason], default=GrantReason.GRANT.value
    )
    grant.add_argument("--json", action="store_true", help="print the reply as JSON")
    balance = actions.add_parser("balance", help="a user's credit balance")
    balance.add_argument("--user", required=True, help="user id")
    balance.add_argument("--json", action="store_true", help="print the reply as JSON")


def format_grant(reply: CreditGrantReply) -> str:
    """The grant as readable rows, with the key to retry it safely."""
    what = f"{reply.amount} credits to {reply.user_id} ({reply.reason}), entry {reply.entry_id}"
    done = "already granted earlier: nothing added" if reply.replayed else "granted"
    return rows(
        [
            (done, what),
            ("balance", f"{reply.balance} credits"),
            ("idempotency key", f"{reply.idempotency_key} (pass --key to retry safely)"),
        ]
    )


def _request(args: argparse.Namespace) -> CreditGrantRequest | CreditBalanceRequest:
    if args.action == "grant":
        return request_of(
            CreditGrantRequest,
            user_id=args.user,
            amount=args.amount,
            idempotency_key=args.key or new_key(),
            reason=args.reason,
        )
    return request_of(CreditBalanceRequest, user_id=args.user)


async def _answer(
    settings: Settings, request: CreditGrantRequest | CreditBalanceRequest
) -> CreditGrantReply | CreditBalanceReply:
    async with database(settings) as conn:
        if isinstance(request, CreditGrantRequest):
            return await admin.grant_credits(conn, request)
        return await admin.credit_balance(conn, request)


def _text(reply: CreditGrantReply | CreditBalanceReply) -> str:
    if isinstance(reply, CreditGrantReply):
        return format_grant(reply)
    return f"{reply.user_id}: {reply.balance} credits"


async def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run `credits grant` or `credits balance`; 2 for arguments breaking the contract."""
    try:
        request = _request(args)
    except ContractError as error:
        report(error)
        return EXIT_USAGE
    try:
        reply = await _answer(settings, request)
    except ContractError as error:  # a key reused for another grant
        report(error)
        return EXIT_FAILED
    show(reply, _text(reply), as_json=args.json)
    return EXIT_OK
