"""`lumiku-bgremover deadletters list|replay`: work items stuck after their last delivery."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from lumiku_bgremover.commands.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, say, shout
from lumiku_bgremover.commands.queue import jetstream
from lumiku_bgremover.operations.deadletters import DeadLetter, list_dead_letters, replay
from lumiku_bgremover.settings import Settings

__all__ = ["add_arguments", "format_letters", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`list [--limit N] [--json]`, `replay (--all | SEQ...)`."""
    actions = parser.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="max-deliveries advisories not moved yet")
    listing.add_argument("--limit", type=int, default=100, help="at most this many")
    listing.add_argument("--json", action="store_true", help="print JSON")
    again = actions.add_parser("replay", help="queue the stuck items again")
    again.add_argument("--all", action="store_true", help="every dead letter")
    again.add_argument("seqs", nargs="*", type=int, metavar="SEQ", help="sequences from `list`")


def _row(letter: DeadLetter) -> str:
    item = letter.item
    what = f"item {item.item_id} of batch {item.batch_id} ({item.user_id})" if item else "gone"
    return f"{letter.seq:>6}  {letter.consumer}  seq {letter.stream_seq}  {what}"


def format_letters(letters: Sequence[DeadLetter]) -> str:
    """One line per dead letter, or a line saying there are none."""
    return "\n".join(_row(letter) for letter in letters) or "no dead letters"


def _json(letters: Sequence[DeadLetter]) -> str:
    return json.dumps(
        [
            {"seq": x.seq, "consumer": x.consumer, "stream_seq": x.stream_seq,
             "deliveries": x.deliveries, "item_id": x.item.item_id if x.item else None,
             "batch_id": x.item.batch_id if x.item else None}
            for x in letters
        ]
    )  # fmt: skip


async def run(settings: Settings, args: argparse.Namespace) -> int:
    """List the dead letters, or replay some; 1 when a named one does not exist."""
    if args.action == "replay" and args.all == bool(args.seqs):
        shout("deadletters replay: give either --all or the SEQ numbers to replay")
        return EXIT_USAGE
    async with jetstream(settings.nats) as js:
        letters = await list_dead_letters(js, settings.nats, limit=getattr(args, "limit", 10_000))
        if args.action == "list":
            say(_json(letters) if args.json else format_letters(letters))
            return EXIT_OK
        chosen = letters if args.all else [x for x in letters if x.seq in set(args.seqs)]
        missing = set(args.seqs) - {x.seq for x in chosen}
        for letter in chosen:
            say(f"{letter.seq}: {await replay(js, settings.nats, letter.seq)}")
    if missing:
        shout(f"no such dead letter: {', '.join(map(str, sorted(missing)))}")
        return EXIT_FAILED
    return EXIT_OK
