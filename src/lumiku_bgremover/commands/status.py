"""`lumiku-bgremover status BATCH_ID --user U`: a batch's progress, over NATS request-reply."""

from __future__ import annotations

import argparse

from lumiku_bgremover.commands.asking import DEFAULT_TIMEOUT_S, request_reply, show_answer
from lumiku_bgremover.commands.common import EXIT_USAGE, report, request_of, rows, when
from lumiku_bgremover.contracts import (
    BatchStatusReply,
    BatchStatusRequest,
    ContractError,
    ErrorReply,
    decode_reply,
    encode,
)
from lumiku_bgremover.contracts.subjects import BATCH_STATUS
from lumiku_bgremover.settings import NatsSettings, Settings

__all__ = ["add_arguments", "format_status", "request_status", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`BATCH_ID`, `--user`, `--timeout`, `--json`."""
    parser.add_argument("batch_id", metavar="BATCH_ID", help="the batch id (from batch.accepted)")
    parser.add_argument("--user", required=True, help="the batch's owner (user id)")
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds to wait for the answer"
    )
    parser.add_argument("--json", action="store_true", help="print the raw JSON reply")


async def request_status(
    settings: NatsSettings, request: BatchStatusRequest, *, wait_s: float = DEFAULT_TIMEOUT_S
) -> BatchStatusReply | ErrorReply:
    """Ask the service for one batch's status; `NoService` when nobody answers."""
    data = await request_reply(settings, BATCH_STATUS, encode(request), wait_s=wait_s)
    return decode_reply(BatchStatusReply, data)


def format_status(reply: BatchStatusReply, settings: Settings) -> str:
    """The status as aligned, readable rows (times in the business time zone)."""
    tz = settings.timezone
    counts = f"{reply.succeeded} done, {reply.failed} failed, {reply.cancelled} cancelled"
    counts += f" of {reply.total}"
    pairs = [
        ("batch", f"{reply.batch_id} ({reply.mode}, {reply.tier}) of {reply.user_id}"),
        ("status", str(reply.batch_status)),
        ("images", counts),
        ("credits", f"{reply.credits_charged} charged, {reply.credits_refunded} refunded"),
        ("created", when(reply.created_at, tz)),
        ("updated", when(reply.updated_at, tz)),
    ]
    if reply.completed_at is not None:
        pairs.append(("completed", when(reply.completed_at, tz)))
    if reply.archive is not None:
        pairs.append(("archive", f"{reply.archive.bucket}/{reply.archive.key}"))
    if reply.archive_url is not None:
        pairs.append(("download", reply.archive_url))
    return rows(pairs)


async def run(settings: Settings, args: argparse.Namespace) -> int:
    """Ask and print; 0 for a status, 1 for an error reply or no answer, 2 for bad ids."""
    try:
        request = request_of(BatchStatusRequest, user_id=args.user, batch_id=args.batch_id)
    except ContractError as error:
        report(error)
        return EXIT_USAGE
    return await show_answer(
        settings.nats,
        request_status(settings.nats, request, wait_s=args.timeout),
        lambda reply: format_status(reply, settings),
        as_json=args.json,
    )
