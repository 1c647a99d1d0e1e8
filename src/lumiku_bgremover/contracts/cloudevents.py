"""CloudEvents attributes as NATS headers (binary content mode), built from arguments.

Pure: ids and times are parameters, never made here. `Nats-Msg-Id` equals `ce-id`
so JetStream drops a re-publish of the same event inside its duplicate window.
Derive ids from what the event is about (`stable_event_id`) and a retried publish
after a crash is de-duplicated too.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

SPEC_VERSION: Final = "1.0"
SPECVERSION: Final = "ce-specversion"
ID: Final = "ce-id"
TYPE: Final = "ce-type"
SOURCE: Final = "ce-source"
TIME: Final = "ce-time"
#: JetStream's de-duplication header.
NATS_MSG_ID: Final = "Nats-Msg-Id"
#: The `ce-source` of this service's events.
DEFAULT_SOURCE: Final = "/lumiku/bgremover"

#: Header values must be one line of visible characters (no CR/LF, no spaces in ids).
_TOKEN = re.compile(r"^[\x21-\x7e]{1,256}$")
_SEP = "\x1f"


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with a `Z`, to the microsecond when there is one."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"ce-time needs a timezone-aware datetime, got {moment!r}")
    text = moment.astimezone(UTC).isoformat()
    return text.removesuffix("+00:00") + "Z"


def _token(name: str, value: str) -> str:
    if not _TOKEN.match(value):
        raise ValueError(f"{name} must be 1..256 visible ASCII characters, got {value!r}")
    return value


def event_headers(*, event_id: str, event_type: str, source: str, time: datetime) -> dict[str, str]:
    """The headers of one event: the CloudEvents attributes plus `Nats-Msg-Id`.

    `event_type` is the event's base subject (`bgremove.item.done`), whatever the
    deployment prefix; `source` a URI reference such as `DEFAULT_SOURCE`.
    """
    event_id = _token(ID, event_id)
    return {
        SPECVERSION: SPEC_VERSION,
        ID: event_id,
        TYPE: _token(TYPE, event_type),
        SOURCE: _token(SOURCE, source),
        TIME: format_time(time),
        NATS_MSG_ID: event_id,
    }


def stable_event_id(*parts: str) -> str:
    """A 32-hex-digit id derived from `parts` (such as type, batch id, item id)."""
    if not parts or not all(parts):
        raise ValueError("stable_event_id needs one or more non-empty parts")
    return hashlib.sha256(_SEP.join(parts).encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class EventAttributes:
    """The CloudEvents attributes read back from a message's headers."""

    event_id: str
    event_type: str
    source: str
    time: datetime | None


def read_event_headers(headers: Mapping[str, str]) -> EventAttributes | None:
    """The attributes of a CloudEvents message, or None when it carries none.

    Raises ValueError when `ce-specversion` is there but other attributes are
    missing or malformed (another app's bug, worth a rejection).
    """
    if SPECVERSION not in headers:
        return None
    if headers[SPECVERSION] != SPEC_VERSION:
        raise ValueError(f"unsupported ce-specversion {headers[SPECVERSION]!r}")
    missing = [name for name in (ID, TYPE, SOURCE) if not headers.get(name)]
    if missing:
        raise ValueError(f"CloudEvents headers missing: {', '.join(missing)}")
    raw_time = headers.get(TIME)
    time = datetime.fromisoformat(raw_time) if raw_time else None
    if time is not None and time.utcoffset() is None:
        raise ValueError(f"ce-time has no offset: {raw_time!r}")
    return EventAttributes(headers[ID], headers[TYPE], headers[SOURCE], time)
