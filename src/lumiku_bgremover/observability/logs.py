"""Log lines: text or one JSON object a line, with the ids of what is being worked on.

`log_ids(batch_id=..., item_id=..., user_id=...)` binds ids to the running task (a
context variable), and every line logged inside carries them as fields, whatever
module logs it. Lines never carry secrets: credentials in URLs are masked, and a
message is cut short, so no image bytes or bodies flood the log.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Final

import msgspec
from opentelemetry import trace

from lumiku_bgremover.settings import LogFormat

__all__ = [
    "ID_FIELDS",
    "JsonFormatter",
    "TextFormatter",
    "configure_logging",
    "current_ids",
    "log_ids",
    "redact",
]

#: The ids a line may carry as fields.
ID_FIELDS: Final = ("request_id", "batch_id", "item_id", "user_id")
#: What FastStream's access lines say of their message (its `extra`), kept as fields too.
MESSAGE_FIELDS: Final = ("subject", "stream", "message_id")
#: Longest message kept (anything longer is cut: no bodies or image bytes in logs).
MAX_MESSAGE_CHARS: Final = 2000
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s %(message)s"

_EMPTY: Final[Mapping[str, str]] = MappingProxyType({})
_IDS: ContextVar[Mapping[str, str]] = ContextVar("lumiku_log_ids", default=_EMPTY)
#: `scheme://user:password@` -> `scheme://user:***@`
_URL_CREDENTIALS: Final = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*:)[^\s@]+@")
_SECRET_PAIRS: Final = re.compile(
    r"(?P<key>(?:password|secret|token|api[_-]?key|authorization)[\"']?\s*[=:]\s*[\"']?)"
    r"[^\s\"',;&]+",
    re.IGNORECASE,
)


@contextlib.contextmanager
def log_ids(**ids: str | None) -> Iterator[None]:
    """Lines logged inside carry these ids (None values are left out)."""
    bound = {**_IDS.get(), **{name: value for name, value in ids.items() if value}}
    token = _IDS.set(MappingProxyType(bound))
    try:
        yield
    finally:
        _IDS.reset(token)


def current_ids() -> Mapping[str, str]:
    """The ids bound to the running task."""
    return _IDS.get()


def redact(text: str) -> str:
    """Mask credentials (URL passwords, `password=...`, `token: ...`) and cut long text."""
    text = _URL_CREDENTIALS.sub(r"\g<head>***@", text)
    text = _SECRET_PAIRS.sub(r"\g<key>***", text)
    if len(text) > MAX_MESSAGE_CHARS:
        return text[:MAX_MESSAGE_CHARS] + f"... ({len(text) - MAX_MESSAGE_CHARS} more chars)"
    return text


def _ids_of(record: logging.LogRecord) -> dict[str, str]:
    ids = dict(current_ids())
    for name in (*ID_FIELDS, *MESSAGE_FIELDS):
        value = record.__dict__.get(name)
        if isinstance(value, str) and value:
            ids[name] = value
    return ids


def _trace_of() -> dict[str, str]:
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, ids, trace, error."""

    def format(self, record: logging.LogRecord) -> str:
        """The line for `record`."""
        entry: dict[str, str] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
            **_ids_of(record),
            **_trace_of(),
        }
        if record.exc_info:
            entry["error"] = redact(self.formatException(record.exc_info))
        return msgspec.json.encode(entry).decode()


class TextFormatter(logging.Formatter):
    """The plain line, redacted, with the bound ids appended as `name=value`."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        """The line for `record`."""
        line = redact(super().format(record))
        ids = " ".join(f"{name}={value}" for name, value in _ids_of(record).items())
        return f"{line} [{ids}]" if ids else line


def configure_logging(level: str, log_format: LogFormat) -> None:
    """Send every logger's lines to stderr in `log_format` at `level`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format is LogFormat.JSON else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
