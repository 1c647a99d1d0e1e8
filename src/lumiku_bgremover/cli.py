"""The `lumiku-bgremover` command: run, notifier, migrate, provision, quote, credits,
subscription, settings, status, queue, deadletters, cleanup, models, demo and dev."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from typing import Any

import asyncpg

from lumiku_bgremover import __version__, db
from lumiku_bgremover.app import StartupError, create_app, provision
from lumiku_bgremover.commands import cleanup as cleanup_cmd
from lumiku_bgremover.commands import credits as credits_cmd
from lumiku_bgremover.commands import deadletters as deadletters_cmd
from lumiku_bgremover.commands import models as models_cmd
from lumiku_bgremover.commands import queue as queue_cmd
from lumiku_bgremover.commands import quote as quote_cmd
from lumiku_bgremover.commands import status as status_cmd
from lumiku_bgremover.commands import subscriptions as subscription_cmd
from lumiku_bgremover.commands import usersettings as settings_cmd
from lumiku_bgremover.devtools import demo as demo_cmd
from lumiku_bgremover.devtools import dev as dev_cmd
from lumiku_bgremover.engines.base import EngineError
from lumiku_bgremover.envparse import SettingsError
from lumiku_bgremover.handlers.notifier import create_notifier_app
from lumiku_bgremover.memory import start_trimming
from lumiku_bgremover.observability.export import tracer_provider
from lumiku_bgremover.observability.logs import configure_logging
from lumiku_bgremover.provisioning import ProvisionError
from lumiku_bgremover.settings import Settings
from lumiku_bgremover.storage import build_object_store
from lumiku_bgremover.storage.lifecycle import expiry_rules

EXIT_CONFIG = 2
EXIT_FAILED = 1

Command = Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]
Arguments = Callable[[argparse.ArgumentParser], None]


async def cmd_run(settings: Settings, _: argparse.Namespace) -> int:
    """Serve until SIGTERM or SIGINT; in-flight messages finish first. Spans go to the
    OTLP endpoint when one is configured (flushed on the way out); freed image buffers go
    back to the system (memory.py)."""
    start_trimming()
    provider = tracer_provider(settings.observability)
    try:
        app = create_app(settings, tracer_provider=provider)
        await app.run(log_level=logging.getLevelName(settings.log_level))
    finally:
        if provider is not None:
            provider.shutdown()
    return 0


async def cmd_notifier(settings: Settings, _: argparse.Namespace) -> int:
    """Send completion e-mails until SIGTERM or SIGINT (the optional notifier role)."""
    app = create_notifier_app(settings)
    await app.run(log_level=logging.getLevelName(settings.log_level))
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


async def cmd_provision(settings: Settings, args: argparse.Namespace) -> int:
    """Create or update the JetStream streams and the bucket."""
    if args.integrations_stream:
        settings = replace(
            settings, integrations=replace(settings.integrations, provision_stream=True)
        )
    store = build_object_store(settings.storage)
    for stream, action in (await provision(settings, store)).items():
        print(f"stream {stream}: {action}")
    rules = expiry_rules(settings.retention)
    kept = ", ".join(f"{r.prefix} {r.days} d" for r in rules) or "everything kept"
    print(f"bucket {store.bucket}: ready (expiry: {kept})")
    return 0


def no_arguments(_: argparse.ArgumentParser) -> None:
    """Commands that read everything from the environment."""


def provision_arguments(parser: argparse.ArgumentParser) -> None:
    """`--integrations-stream`: also create a stream for other apps' events (development)."""
    parser.add_argument(
        "--integrations-stream",
        action="store_true",
        help="create our own stream for other apps' events (as INTEGRATIONS_PROVISION_STREAM)",
    )


COMMANDS: dict[str, tuple[Command, str, Arguments]] = {
    "run": (cmd_run, "serve: consume requests and work items, answer quotes", no_arguments),
    "notifier": (
        cmd_notifier,
        "send completion e-mails for finished batches (optional role)",
        no_arguments,
    ),
    "migrate": (cmd_migrate, "apply database migrations (idempotent)", no_arguments),
    "provision": (
        cmd_provision,
        "create or update JetStream streams and the bucket",
        provision_arguments,
    ),
    "quote": (
        quote_cmd.run,
        "ask a running service for a quote over NATS",
        quote_cmd.add_arguments,
    ),
    "credits": (
        credits_cmd.run,
        "grant credits or show a balance (on the database)",
        credits_cmd.add_arguments,
    ),
    "subscription": (
        subscription_cmd.run,
        "set or show a user's subscription (on the database)",
        subscription_cmd.add_arguments,
    ),
    "settings": (
        settings_cmd.run,
        "set or show a user's integration settings per app (on the database)",
        settings_cmd.add_arguments,
    ),
    "status": (
        status_cmd.run,
        "ask a running service for a batch's progress over NATS",
        status_cmd.add_arguments,
    ),
    "queue": (
        queue_cmd.run,
        "work-queue consumers: stats, pause, resume (on JetStream)",
        queue_cmd.add_arguments,
    ),
    "deadletters": (
        deadletters_cmd.run,
        "list or replay work items stuck after their last delivery",
        deadletters_cmd.add_arguments,
    ),
    "cleanup": (
        cleanup_cmd.run,
        "delete finished batches older than RETENTION_BATCHES_DAYS (on the database)",
        cleanup_cmd.add_arguments,
    ),
    "models": (
        models_cmd.run,
        "local engine models: list them, or fetch and verify their weights",
        models_cmd.add_arguments,
    ),
    "demo": (
        demo_cmd.run,
        "run a real batch on an embedded stack and write a before/after gallery",
        demo_cmd.add_arguments,
    ),
    "dev": (
        dev_cmd.run,
        "dev up: keep an embedded NATS, PostgreSQL and local store running",
        dev_cmd.add_arguments,
    ),
}


def parser() -> argparse.ArgumentParser:
    """The argument parser; settings come from the environment, not from arguments."""
    top = argparse.ArgumentParser(prog="lumiku-bgremover", description=__doc__)
    top.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = top.add_subparsers(dest="command", required=True)
    for name, (_, summary, add_arguments) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=summary, description=summary))
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        configure_logging(settings.log_level, settings.log_format)
        return asyncio.run(COMMANDS[args.command][0](settings, args))
    except SettingsError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    except (StartupError, ProvisionError, EngineError, OSError, asyncpg.PostgresError) as error:
        print(f"lumiku-bgremover {args.command}: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
