"""`lumiku-bgremover cleanup`: delete finished batches older than the retention period."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta

from lumiku_bgremover.commands.common import EXIT_OK, EXIT_USAGE, database, say, shout
from lumiku_bgremover.operations.cleanup import count_finished, delete_finished
from lumiku_bgremover.settings import MIN_BATCH_RETENTION_DAYS, Settings

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`[--days N] [--dry-run] [--json]`."""
    parser.add_argument(
        "--days", type=int, help="keep this many days (default: RETENTION_BATCHES_DAYS)"
    )
    parser.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    parser.add_argument("--json", action="store_true", help="print JSON")


async def run(settings: Settings, args: argparse.Namespace) -> int:
    """Delete (or count) old finished batches; 2 for a retention under the minimum."""
    days = settings.retention.batches_days if args.days is None else args.days
    if days == 0:
        say("retention is off (RETENTION_BATCHES_DAYS=0): nothing deleted")
        return EXIT_OK
    if days < MIN_BATCH_RETENTION_DAYS:
        shout(f"cleanup: --days must be at least {MIN_BATCH_RETENTION_DAYS}, got {days}")
        return EXIT_USAGE
    before = datetime.now(UTC) - timedelta(days=days)
    async with database(settings) as conn:
        done = await (
            count_finished(conn, before) if args.dry_run else delete_finished(conn, before)
        )
    verb = "would delete" if args.dry_run else "deleted"
    if args.json:
        say(json.dumps({"dry_run": args.dry_run, "batches": done.batches, "items": done.items,
                        "before": before.isoformat()}))  # fmt: skip
    else:
        say(f"{verb} {done.batches} batches ({done.items} items) finished before {before:%Y-%m-%d}")
    return EXIT_OK
