"""Shared by the commands: arguments to contracts, a database connection, plain output."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import msgspec

from lumiku_bgremover import db
from lumiku_bgremover.billing import Conn
from lumiku_bgremover.contracts import ContractError, ErrorReply, classify, encode
from lumiku_bgremover.settings import Settings

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "database",
    "error_text",
    "report",
    "request_of",
    "rows",
    "say",
    "shout",
    "show",
    "when",
]

T = TypeVar("T")

EXIT_OK = 0
EXIT_FAILED = 1
#: Arguments that break a contract (argparse uses 2 for its own usage errors too).
EXIT_USAGE = 2


def rows(pairs: Sequence[tuple[str, str]]) -> str:
    """`label  value` lines, the values aligned in one column."""
    width = max((len(label) for label, _ in pairs), default=0)
    return "\n".join(f"{label.ljust(width)}  {value}" for label, value in pairs)


def when(moment: datetime, tz: ZoneInfo) -> str:
    """A time in `tz`, to the minute, with its offset and zone name."""
    local = moment.astimezone(tz)
    return f"{local.isoformat(sep=' ', timespec='minutes')} ({tz.key})"


def error_text(error: ErrorReply) -> str:
    """`error <code>: <message> (at <path>)`."""
    where = f" (at {error.path})" if error.path else ""
    return f"error {error.code}: {error.message}{where}"


def say(text: str) -> None:
    """Write a line to standard output."""
    sys.stdout.write(text + "\n")


def shout(text: str) -> None:
    """Write a line to standard error."""
    sys.stderr.write(text + "\n")


def show(message: msgspec.Struct, text: str, *, as_json: bool) -> None:
    """Write `message` as its JSON body when `as_json`, else `text`."""
    say(encode(message).decode() if as_json else text)


def request_of(kind: type[T], **fields: Any) -> T:
    """Command-line values as a validated contract request, or `ContractError`."""
    try:
        return msgspec.convert(fields, kind)
    except msgspec.ValidationError as error:
        raise classify(str(error)) from error


def report(error: ContractError) -> None:
    """Write a refused request (bad arguments, or refused by billing) to standard error."""
    shout(error_text(error.to_error_reply()))


@asynccontextmanager
async def database(settings: Settings) -> AsyncIterator[Conn]:
    """One connection to `DATABASE_URL`, closed on exit."""
    async with db.connect(settings.require_database().url) as conn:
        yield conn
