"""Pure builders of the generated contract documents: JSON Schemas and AsyncAPI.

Everything comes from the msgspec Structs and `subjects.REGISTRY`, so the
documents cannot disagree with the code (a test compares them with the files).
"""

from __future__ import annotations

import inspect
import json
from typing import Any, Final

import msgspec
import yaml

from lumiku_bgremover import __version__
from lumiku_bgremover.contracts import cloudevents as ce
from lumiku_bgremover.contracts.subjects import REGISTRY, Contract, Direction, message_types
from lumiku_bgremover.contracts.work import Lane

#: The JSON Schema dialect msgspec's schemas follow.
JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
ASYNCAPI_VERSION: Final = "3.0.0"
SCHEMA_DIR: Final = "contracts/schemas"
EXAMPLE_DIR: Final = "contracts/examples"
ASYNCAPI_PATH: Final = "contracts/asyncapi.yaml"
README_PATH: Final = "contracts/README.md"
HEADERS: Final = "CloudEventHeaders"
INBOUND_HEADERS: Final = "InboundHeaders"
_COMPONENT_REF: Final = "#/components/schemas/{name}"


def _tidy(node: Any) -> Any:
    """Docstring descriptions dedented (Python 3.13 does it at compile time, 3.11 not)."""
    if isinstance(node, dict):
        return {
            key: inspect.cleandoc(value)
            if key == "description" and isinstance(value, str)
            else _tidy(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_tidy(item) for item in node]
    return node


def message_schema(kind: type[msgspec.Struct]) -> dict[str, Any]:
    """The standalone JSON Schema (Draft 2020-12, `$defs` inside) of one message type."""
    return {"$schema": JSON_SCHEMA_DIALECT, **_tidy(msgspec.json.schema(kind))}


def schema_text(kind: type[msgspec.Struct]) -> str:
    """`message_schema` as the text of its file: 2-space JSON, trailing newline."""
    return json.dumps(message_schema(kind), indent=2) + "\n"


def schema_path(kind: type[msgspec.Struct]) -> str:
    """Path of a message's schema file, relative to the repository root."""
    return f"{SCHEMA_DIR}/{kind.__name__}.json"


def example_path(kind: type[msgspec.Struct]) -> str:
    """Path of a message's hand-written example, relative to the repository root."""
    return f"{EXAMPLE_DIR}/{kind.__name__}.json"


def summary_of(kind: type[msgspec.Struct]) -> str:
    """The first line of a message type's docstring."""
    return inspect.cleandoc(kind.__doc__ or kind.__name__).split("\n", 1)[0]


def headers_schema(*, required: bool) -> dict[str, Any]:
    """The JSON Schema of the CloudEvents headers (all required on our own events)."""
    text = {"type": "string", "minLength": 1, "maxLength": 256}
    properties: dict[str, Any] = {
        ce.SPECVERSION: {"const": ce.SPEC_VERSION},
        ce.ID: {**text, "description": "unique event id; equals Nats-Msg-Id"},
        ce.TYPE: {**text, "description": "the base subject, without deployment prefix"},
        ce.SOURCE: {**text, "description": "URI reference of the producer"},
        ce.TIME: {"type": "string", "format": "date-time", "description": "RFC 3339"},
        ce.NATS_MSG_ID: {**text, "description": "JetStream de-duplication id (= ce-id)"},
    }
    return {
        "type": "object",
        "description": "CloudEvents 1.0 binary mode over NATS headers"
        + ("" if required else " (recommended; Nats-Msg-Id lets JetStream de-duplicate)"),
        "properties": properties,
        "required": list(properties) if required else [],
    }


def _components_schemas() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(message_types(), ref_template=_COMPONENT_REF)
    return {
        **_tidy(components),
        HEADERS: headers_schema(required=True),
        INBOUND_HEADERS: headers_schema(required=False),
    }


def _ref(path: str) -> dict[str, str]:
    return {"$ref": path}


def _message(kind: type[msgspec.Struct], headers: str | None) -> dict[str, Any]:
    message: dict[str, Any] = {
        "name": kind.__name__,
        "title": kind.__name__,
        "summary": summary_of(kind),
        "contentType": "application/json",
    }
    if headers is not None:
        message["headers"] = _ref(_COMPONENT_REF.format(name=headers))
    message["payload"] = _ref(_COMPONENT_REF.format(name=kind.__name__))
    return message


def _components_messages() -> dict[str, Any]:
    messages: dict[str, Any] = {}
    for contract in REGISTRY:
        headers = _headers_of(contract)
        for kind in (*contract.messages, *contract.replies):
            messages.setdefault(kind.__name__, _message(kind, headers))
    return messages


def _headers_of(contract: Contract) -> str | None:
    if not contract.jetstream:
        return None
    return INBOUND_HEADERS if contract.direction is Direction.IN else HEADERS


def _message_refs(kinds: tuple[type[msgspec.Struct], ...]) -> dict[str, Any]:
    return {k.__name__: _ref(f"#/components/messages/{k.__name__}") for k in kinds}


def _channels() -> dict[str, Any]:
    channels: dict[str, Any] = {}
    for contract in REGISTRY:
        channel: dict[str, Any] = {
            "address": contract.subject,
            "description": contract.summary,
            "messages": _message_refs(contract.messages),
        }
        if contract.direction is Direction.INTERNAL:
            channel["parameters"] = {
                "lane": {"enum": [lane.value for lane in Lane], "description": "work lane"},
                "user_id": {"description": "the owner's user id (the partition key)"},
            }
        channels[contract.channel_id] = channel
        if contract.replies:
            channels[contract.channel_id + "Reply"] = {
                "address": None,
                "description": f"The requester's reply inbox for `{contract.subject}`.",
                "messages": _message_refs(contract.replies),
            }
    return channels


def _operation(contract: Contract, action: str, channel: str) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "action": action,
        "channel": _ref(f"#/channels/{channel}"),
        "summary": contract.summary,
        "messages": [
            _ref(f"#/channels/{channel}/messages/{k.__name__}") for k in contract.messages
        ],
    }
    if contract.replies:
        reply = channel + "Reply"
        operation["reply"] = {
            "channel": _ref(f"#/channels/{reply}"),
            "messages": [
                _ref(f"#/channels/{reply}/messages/{k.__name__}") for k in contract.replies
            ],
        }
    return operation


def _operations() -> dict[str, Any]:
    actions = {
        Direction.IN: ("receive",),
        Direction.REQUEST_REPLY: ("receive",),
        Direction.OUT: ("send",),
        Direction.INTERNAL: ("send", "receive"),
    }
    operations: dict[str, Any] = {}
    for contract in REGISTRY:
        channel = contract.channel_id
        for action in actions[contract.direction]:
            name = action + channel[:1].upper() + channel[1:]
            operations[name] = _operation(contract, action, channel)
    return operations


def asyncapi_document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document of every subject, from the registry and the Structs."""
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "lumiku-bgremover",
            "version": __version__,
            "description": (
                "Background removal for the Lumiku platform over NATS JetStream. Subjects are "
                "shown without the deployment prefix. Generated from the msgspec Structs by "
                "`python -m lumiku_bgremover.contracts.generate`; do not edit."
            ),
        },
        "defaultContentType": "application/json",
        "channels": _channels(),
        "operations": _operations(),
        "components": {"schemas": _components_schemas(), "messages": _components_messages()},
    }


def asyncapi_text() -> str:
    """`asyncapi_document` as YAML, in document order."""
    return yaml.safe_dump(asyncapi_document(), sort_keys=False, allow_unicode=False, width=100)
