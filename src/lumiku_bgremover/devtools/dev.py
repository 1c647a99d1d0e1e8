"""`lumiku-bgremover dev up`: the embedded stack kept running for development.

It starts a private nats-server (JetStream) and PostgreSQL (migrated) and prepares a
local object store, prints where they are and the variables that point any other
`lumiku-bgremover` command at them, and keeps them up until Ctrl-C (or SIGTERM).
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import Final

from lumiku_bgremover.commands.common import EXIT_FAILED, EXIT_OK, say, shout
from lumiku_bgremover.devtools.embedded import (
    EmbeddedError,
    EmbeddedStack,
    Interrupted,
    embedded_stack,
    environment,
    export_lines,
    routes_to,
    stack_settings,
    stop_on_signals,
    workspace,
)
from lumiku_bgremover.settings import Settings
from lumiku_bgremover.storage import DEFAULT_LOCAL_BUCKET

__all__ = ["ENGINES", "add_arguments", "line_buffered_stdout", "run", "stack_lines"]

#: The tier routing `dev up` suggests, by `--engine`.
ENGINES: Final = {"local": "isnet-medium", "fake": "fake-matte"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `up` sub-command with `--workdir` and `--engine`."""
    actions = parser.add_subparsers(dest="dev_command", required=True, metavar="up")
    up = actions.add_parser("up", help="start the embedded stack and keep it running")
    up.add_argument(
        "--workdir", type=Path, default=None,
        help="keep the servers' data here, across runs (default: a temporary folder)",
    )  # fmt: skip
    up.add_argument(
        "--engine", choices=sorted(ENGINES), default="local",
        help="the engine the printed TIER_ROUTING names for every tier",
    )  # fmt: skip


def line_buffered_stdout() -> None:
    """Each line reaches a pipe or a file at once (a log another program waits on)."""
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)


def stack_lines(stack: EmbeddedStack, settings: Settings) -> list[str]:
    """What `dev up` prints: the servers, then the variables to export and what to run."""
    bucket = settings.storage.s3.bucket if settings.storage.s3 else DEFAULT_LOCAL_BUCKET
    return [
        f"nats        {stack.nats_url}  (pid {stack.nats.pid}, store {stack.nats.store_dir})",
        f"postgres    {stack.database_url}  (pid {stack.postgres.pid})",
        f"storage     {stack.storage_dir}  (bucket {bucket})",
        f"migrations  {', '.join(stack.migrations) or 'none pending'}",
        "",
        "In another terminal:",
        *(f"  {line}" for line in export_lines(environment(settings))),
        "  lumiku-bgremover run",
        "",
        "Then, for instance:",
        "  lumiku-bgremover credits grant --user usr_1 --amount 100",
        "  lumiku-bgremover quote --user usr_1 --tier standard --count 5",
        "  lumiku-bgremover status BATCH_ID --user usr_1",
        "",
        "Ctrl-C stops the stack.",
    ]


async def _up(settings: Settings, args: argparse.Namespace) -> int:
    async with stop_on_signals(cancel=False) as watch:
        with workspace(args.workdir, prefix="lumiku-dev-") as workdir:
            async with embedded_stack(workdir) as stack:
                dev = stack_settings(stack, settings, routes_to(args.engine, ENGINES[args.engine]))
                for line in stack_lines(stack, dev):
                    say(line)
                say("lumiku-bgremover dev: stack up")
                await watch.wait().wait()
                say(f"lumiku-bgremover dev: stopping ({Interrupted(watch.received or 0)})")
        say("lumiku-bgremover dev: stopped, nothing left running")
    return EXIT_OK


async def run(settings: Settings, args: argparse.Namespace) -> int:
    """`dev up`: 0 once stopped by a signal, 1 when the stack cannot start."""
    line_buffered_stdout()
    try:
        return await _up(settings, args)
    except Interrupted as stopped:  # a signal during start-up
        shout(f"lumiku-bgremover dev {stopped}: nothing left running")
        return stopped.exit_code
    except EmbeddedError as error:
        shout(f"lumiku-bgremover dev: {error}")
        return EXIT_FAILED
