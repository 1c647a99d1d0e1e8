"""Encode and decode message bodies; decoding errors become `ContractError`s.

A `ContractError` carries the `RejectCode` a `RequestRejected` or `ErrorReply`
reports, the message, and the JSON path of the offending value (`$.images[3].ref`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import msgspec

from lumiku_bgremover.contracts.codes import RejectCode
from lumiku_bgremover.contracts.common import Correlation, Ident, UserId
from lumiku_bgremover.contracts.replies import ErrorReply

T = TypeVar("T")

#: msgspec ends a validation message with ` - at `$.path``.
_AT = re.compile(r"^(?P<message>.*?) - at `(?P<path>\$[^`]*)`$", re.DOTALL)
#: Lists whose length is capped by the per-request image limit.
_IMAGE_LISTS: Final = frozenset({"images", "avatars"})
_LAST_FIELD = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)$")
_ENCODER: Final = msgspec.json.Encoder()
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: Why a body nested deeper than the decoder's recursion limit is refused.
NESTED_TOO_DEEPLY: Final = "malformed JSON: nested too deeply"
#: Longest message and path a `ContractError` keeps (the `ErrorReply` limits).
MAX_MESSAGE: Final = 2000
MAX_PATH: Final = 512


def _one_line(text: str, limit: int) -> str:
    """`text` with control characters escaped (`\\n`), cut to `limit` characters."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)[:limit]


class ContractError(ValueError):
    """A body that breaks its contract: a `RejectCode`, a message and a JSON path."""

    def __init__(self, code: RejectCode, message: str, path: str | None = None) -> None:
        message = _one_line(message, MAX_MESSAGE)
        path = None if path is None else _one_line(path, MAX_PATH)
        super().__init__(f"{code}: {message}" + (f" (at {path})" if path else ""))
        self.code = code
        self.message = message
        self.path = path

    def to_error_reply(self) -> ErrorReply:
        """The error as a request-reply answer."""
        return ErrorReply(code=self.code, message=self.message, path=self.path)


def encode(message: msgspec.Struct) -> bytes:
    """The JSON body of a message."""
    return _ENCODER.encode(message)


_DECODERS: dict[Any, msgspec.json.Decoder[Any]] = {}


def _decoder(kind: Any) -> msgspec.json.Decoder[Any]:
    decoder = _DECODERS.get(kind)
    if decoder is None:
        decoder = _DECODERS[kind] = msgspec.json.Decoder(kind)
    return decoder


def decode(kind: type[T], data: bytes | bytearray | memoryview | str) -> T:
    """Decode and validate a body as `kind`, or raise `ContractError`."""
    try:
        result: T = _decoder(kind).decode(data)
    except msgspec.ValidationError as error:
        raise classify(str(error)) from error
    except msgspec.DecodeError as error:
        raise ContractError(RejectCode.INVALID_REQUEST, f"malformed JSON: {error}") from error
    except RecursionError:  # msgspec recurses into values it skips (unknown fields)
        raise ContractError(RejectCode.INVALID_REQUEST, NESTED_TOO_DEEPLY) from None
    return result


def decode_reply(kind: type[T], data: bytes | bytearray | memoryview | str) -> T | ErrorReply:
    """Decode a reply that is either `kind` (tagged `"ok"`) or an `ErrorReply`."""
    return decode(kind | ErrorReply, data)  # type: ignore[arg-type]


def classify(text: str) -> ContractError:
    """The `ContractError` of a msgspec validation message."""
    match = _AT.match(text)
    message, path = (match["message"], match["path"]) if match else (text, "$")
    field = _LAST_FIELD.search(path)
    name = field.group(1) if field else ""
    if name == "tier":
        return ContractError(RejectCode.UNKNOWN_TIER, message, path)
    if "length <=" in message and name in _IMAGE_LISTS:
        return ContractError(RejectCode.TOO_MANY_IMAGES, message, path)
    if name == "count" and "<=" in message:
        return ContractError(RejectCode.TOO_MANY_IMAGES, message, path)
    return ContractError(RejectCode.INVALID_REQUEST, message, path)


class _Loose(msgspec.Struct):
    request_id: Any = None
    event_id: Any = None
    user_id: Any = None
    correlation: Any = None


@dataclass(frozen=True, slots=True)
class Identity:
    """What could be read of a rejected body, to address the rejection."""

    request_id: str | None = None
    user_id: str | None = None
    correlation: Correlation | None = None


def _valid(kind: Any, value: Any) -> Any:
    try:
        return msgspec.convert(value, kind) if value is not None else None
    except msgspec.ValidationError:
        return None


def peek_identity(data: bytes | bytearray | memoryview | str) -> Identity:
    """The request id (or event id), user id and correlation of a body, each only when
    valid; nothing when the body is not a JSON object. Never raises."""
    try:
        loose = msgspec.json.decode(data, type=_Loose)
    except (msgspec.DecodeError, RecursionError):
        return Identity()
    request_id = _valid(Ident, loose.request_id) or _valid(Ident, loose.event_id)
    return Identity(
        request_id=request_id,
        user_id=_valid(UserId, loose.user_id),
        correlation=_valid(Correlation, loose.correlation),
    )
