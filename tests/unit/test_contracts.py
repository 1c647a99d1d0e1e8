"""The generated contract documents agree with the Structs; examples agree with both."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_type_hints

import jsonschema
import msgspec
import pytest
import yaml

from lumiku_bgremover import contracts
from lumiku_bgremover.contracts import documents, generate
from lumiku_bgremover.contracts.common import ForeignEvent, Message
from lumiku_bgremover.contracts.inbound import BatchRequested
from lumiku_bgremover.contracts.subjects import REGISTRY, Direction, message_types
from lumiku_bgremover.pipeline.intake import batch_id_for, item_id_for

ROOT = Path(__file__).resolve().parents[2]
KINDS = message_types()
IDS = [kind.__name__ for kind in KINDS]


def read_json(rel: str) -> Any:
    return json.loads((ROOT / rel).read_text(encoding="utf-8"))


# --- drift: files on disk are what the generator makes now ---


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_schema_on_disk_is_freshly_generated(kind: type[msgspec.Struct]) -> None:
    path = ROOT / documents.schema_path(kind)
    assert path.read_text(encoding="utf-8") == documents.schema_text(kind), (
        f"{path.name} is stale: run `make contracts`"
    )


def test_asyncapi_and_readme_are_up_to_date() -> None:
    assert (ROOT / documents.ASYNCAPI_PATH).read_text(encoding="utf-8") == (
        documents.asyncapi_text()
    )
    assert (ROOT / documents.README_PATH).read_text(encoding="utf-8") == generate.generated_files()[
        documents.README_PATH
    ]


def test_nothing_is_stale_and_no_schema_is_orphaned() -> None:
    assert generate.stale_files(ROOT) == []


def test_a_changed_struct_makes_its_schema_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    changed = msgspec.defstruct(
        "BatchRequested",
        [*get_type_hints(BatchRequested, include_extras=True).items(), ("priority", int)],
        bases=(Message,),
        frozen=True,
        kw_only=True,
    )
    swapped = tuple(changed if kind is BatchRequested else kind for kind in KINDS)
    monkeypatch.setattr(generate, "message_types", lambda: swapped)
    assert "contracts/schemas/BatchRequested.json" in generate.stale_files(ROOT)


def test_check_mode_fails_on_stale_files_and_write_fixes_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert generate.main(["--root", str(tmp_path), "--check"]) == 1
    assert "stale: contracts/asyncapi.yaml" in capsys.readouterr().err
    orphan = tmp_path / documents.SCHEMA_DIR / "Gone.json"
    orphan.parent.mkdir(parents=True)
    orphan.write_text("{}\n")
    assert generate.main(["--root", str(tmp_path)]) == 0
    assert not orphan.exists()
    assert generate.main(["--root", str(tmp_path), "--check"]) == 0
    (tmp_path / documents.schema_path(KINDS[0])).write_text("{}\n")
    assert generate.main(["--root", str(tmp_path), "--check"]) == 1


def test_schema_files_end_with_one_newline_and_carry_the_dialect() -> None:
    for kind in KINDS:
        text = (ROOT / documents.schema_path(kind)).read_text(encoding="utf-8")
        assert text.endswith("}\n")
        assert not text.endswith("\n\n")
        assert json.loads(text)["$schema"] == documents.JSON_SCHEMA_DIALECT


# --- examples: one per message, valid for msgspec and for JSON Schema ---


def test_every_registered_message_has_a_schema_and_an_example() -> None:
    for kind in KINDS:
        assert (ROOT / documents.schema_path(kind)).is_file(), kind.__name__
        assert (ROOT / documents.example_path(kind)).is_file(), kind.__name__
    on_disk = {p.stem for p in (ROOT / documents.EXAMPLE_DIR).glob("*.json")}
    assert on_disk == set(IDS)


def test_examples_show_the_ids_the_service_makes() -> None:
    request = read_json(documents.example_path(BatchRequested))
    batch_id = batch_id_for(request["request_id"])
    for path in sorted((ROOT / documents.EXAMPLE_DIR).glob("*.json")):
        example = json.loads(path.read_text())
        if str(example.get("batch_id", "")).startswith("b_") and "index" in example:
            assert example["item_id"] == item_id_for(batch_id, example["index"]), path.name
        if path.stem.startswith(("Batch", "Item", "Work")) and "batch_id" in example:
            assert example["batch_id"] == batch_id, path.name


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_example_decodes_and_validates_against_its_schema(kind: type[msgspec.Struct]) -> None:
    raw = (ROOT / documents.example_path(kind)).read_bytes()
    message = msgspec.json.decode(raw, type=kind)
    assert isinstance(message, kind)
    schema = read_json(documents.schema_path(kind))
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(json.loads(raw))


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_schema_rejects_what_the_struct_rejects_for_unknown_fields(
    kind: type[msgspec.Struct],
) -> None:
    body = read_json(documents.example_path(kind))
    body["surprise"] = 1
    validator = jsonschema.Draft202012Validator(read_json(documents.schema_path(kind)))
    owned = issubclass(kind, Message)
    assert validator.is_valid(body) is not owned
    if owned:
        with pytest.raises(msgspec.ValidationError, match="unknown field"):
            msgspec.json.decode(json.dumps(body), type=kind)


def test_messages_are_frozen_and_owned_ones_refuse_unknown_fields() -> None:
    for kind in KINDS:
        config = kind.__struct_config__
        assert config.frozen, kind.__name__
        assert issubclass(kind, Message | ForeignEvent), kind.__name__
        assert config.forbid_unknown_fields is issubclass(kind, Message), kind.__name__
    foreign = {k for c in REGISTRY if c.subject.split(".")[0] != "bgremove" for k in c.messages}
    assert {k.__name__ for k in foreign if issubclass(k, ForeignEvent)} == {
        "AvatarProjectCompleted",
        "PoseGenerated",
        "UpscalerCompleted",
    }


# --- AsyncAPI: structure and references ---


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for item in node for r in _refs(item)]
    return []


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def test_asyncapi_lists_every_subject_and_every_reference_resolves() -> None:
    document = yaml.safe_load((ROOT / documents.ASYNCAPI_PATH).read_text(encoding="utf-8"))
    assert document["asyncapi"] == "3.0.0"
    addresses = {c["address"] for c in document["channels"].values()}
    assert {c.subject for c in REGISTRY} <= addresses
    for ref in _refs(document):
        assert _resolve(document, ref) is not None, ref
    assert set(IDS) <= set(document["components"]["schemas"])
    assert set(IDS) == set(document["components"]["messages"])


def test_asyncapi_operations_follow_the_directions() -> None:
    document = documents.asyncapi_document()
    actions: dict[str, set[str]] = {}
    for operation in document["operations"].values():
        address = _resolve(document, operation["channel"]["$ref"])["address"]
        actions.setdefault(address, set()).add(operation["action"])
    expected = {
        Direction.IN: {"receive"},
        Direction.OUT: {"send"},
        Direction.REQUEST_REPLY: {"receive"},
        Direction.INTERNAL: {"send", "receive"},
    }
    for contract in REGISTRY:
        assert actions[contract.subject] == expected[contract.direction], contract.subject
    quote = document["operations"]["receiveBgremoveQuote"]
    replies = {ref["$ref"].rsplit("/", 1)[-1] for ref in quote["reply"]["messages"]}
    assert replies == {"QuoteReply", "ErrorReply"}


def test_asyncapi_events_carry_cloudevents_headers() -> None:
    messages = documents.asyncapi_document()["components"]["messages"]
    assert messages["ItemDone"]["headers"]["$ref"].endswith(documents.HEADERS)
    assert messages["BatchRequested"]["headers"]["$ref"].endswith(documents.INBOUND_HEADERS)
    assert "headers" not in messages["QuoteRequest"]


def test_readme_links_every_message_to_existing_files() -> None:
    text = (ROOT / documents.README_PATH).read_text(encoding="utf-8")
    for contract in REGISTRY:
        assert f"`{contract.subject}`" in text
    for kind in KINDS:
        assert f"(schemas/{kind.__name__}.json)" in text
        assert f"(examples/{kind.__name__}.json)" in text
    assert "`ce-specversion`" in text
    assert "`Nats-Msg-Id`" in text


def test_public_api_is_pinned() -> None:
    registered = {kind.__name__ for kind in KINDS}
    assert registered <= set(contracts.__all__)
    assert {"decode", "decode_reply", "encode", "ContractError", "RejectCode", "FailCode"} <= set(
        contracts.__all__
    )
    assert contracts.__all__ == sorted(contracts.__all__)
    for name in contracts.__all__:
        assert getattr(contracts, name) is not None, name
