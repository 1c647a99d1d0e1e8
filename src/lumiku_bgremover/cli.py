"""The `lumiku-bgremover` command: run, migrate, provision (more arrive with their issues)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import asyncpg

from lumiku_bgremover import __version__, db
from lumiku_bgremover.app import StartupError, create_app, provision
from lumiku_bgremover.envparse import SettingsError
from lumiku_bgremover.settings import Settings
from lumiku_bgremover.storage import build_object_store

EXIT_CONFIG = 2
EXIT_FAILED = 1

Command = Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]


async def cmd_run(settings: Settings, _: argparse.Namespace) -> int:
    """Serve until SIGTERM or SIGINT; in-flight messages finish first."""
    await create_app(settings).run(log_level=logging.getLevelName(settings.log_level))
    return 0


async def cmd_migrate(settings: Settings, _: argparse.Namespace) -> int:
    """Apply pending SQL migrations under an advisory lock."""
    conn = await asyncpg.connect(settings.require_database().url)
    try:
        applied = await db.migrate(conn)
    finally:
        await conn.close()
    print("\n".join(f"applied {name}" for name in applied) or "database is up to date")
    return 0


async def cmd_provision(settings: Settings, _: argparse.Namespace) -> int:
    """Create or update the JetStream streams and the bucket."""
    store = build_object_store(settings.storage)
    for stream, action in (await provision(settings, store)).items():
        print(f"stream {stream}: {action}")
    print(f"bucket {store.bucket}: ready")
    return 0


async def cmd_not_yet(_: Settings, args: argparse.Namespace) -> int:
    """Commands whose issue has not landed yet say so plainly."""
    print(f"`lumiku-bgremover {args.command}` is not available yet (see the CHANGELOG).")
    return EXIT_FAILED


COMMANDS: dict[str, tuple[Command, str]] = {
    "run": (cmd_run, "serve: consume requests and work items, answer quotes"),
    "migrate": (cmd_migrate, "apply database migrations (idempotent)"),
    "provision": (cmd_provision, "create or update JetStream streams and the bucket"),
    "demo": (cmd_not_yet, "run a real batch on an embedded stack (not yet)"),
}


def parser() -> argparse.ArgumentParser:
    """The argument parser; every sub-command reads the rest from the environment."""
    top = argparse.ArgumentParser(prog="lumiku-bgremover", description=__doc__)
    top.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = top.add_subparsers(dest="command", required=True)
    for name, (_, summary) in COMMANDS.items():
        sub.add_parser(name, help=summary, description=summary)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        logging.basicConfig(
            level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
        )
        return asyncio.run(COMMANDS[args.command][0](settings, args))
    except SettingsError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    except (StartupError, OSError, asyncpg.PostgresError) as error:
        print(f"lumiku-bgremover {args.command}: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
