"""Decoding: invalid bodies fail with the right code and path; valid ones round-trip."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest

from lumiku_bgremover.contracts import (
    BatchCancel,
    BatchCompleted,
    BatchRequested,
    ContractError,
    ErrorReply,
    ImageRef,
    ImageRequested,
    ObjectRef,
    OutputFormat,
    OutputOptions,
    PoseGenerated,
    PricingType,
    QuoteReply,
    QuoteRequest,
    RejectCode,
    WorkItem,
    decode,
    decode_reply,
    encode,
    peek_identity,
)
from lumiku_bgremover.contracts.codec import Identity
from lumiku_bgremover.contracts.documents import example_path, schema_path
from lumiku_bgremover.contracts.subjects import message_types

ROOT = Path(__file__).resolve().parents[2]
INVALID = RejectCode.INVALID_REQUEST


def example(kind: type[msgspec.Struct]) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((ROOT / example_path(kind)).read_text(encoding="utf-8"))
    return body


def batch(**changes: Any) -> dict[str, Any]:
    body = example(BatchRequested)
    body.update(changes)
    return body


def image(**changes: Any) -> dict[str, Any]:
    body = batch()
    body["images"][0].update(changes)
    return body


def ref(value: dict[str, Any]) -> dict[str, Any]:
    return image(ref=value)


def options(**changes: Any) -> dict[str, Any]:
    body = batch()
    body["options"] = {**body["options"], **changes}
    return body


def many(count: int) -> dict[str, Any]:
    one = example(BatchRequested)["images"][0]
    return batch(images=[copy.deepcopy(one) for _ in range(count)])


def quote(**changes: Any) -> dict[str, Any]:
    return {**example(QuoteRequest), **changes}


def bad(
    name: str,
    body: Any,
    path: str | None,
    code: RejectCode = INVALID,
    kind: type[msgspec.Struct] = BatchRequested,
    *,
    schema_rejects: bool = True,
) -> Any:
    """One invalid body: what decoding must say, and whether JSON Schema also refuses it."""
    return pytest.param(kind, body, code, path, schema_rejects, id=name)


TOO_MANY = RejectCode.TOO_MANY_IMAGES
UNKNOWN_TIER = RejectCode.UNKNOWN_TIER
HTTPS = "https://x.example/b.png"
WITHOUT_USER = {k: v for k, v in batch().items() if k != "user_id"}

CASES = [
    bad("malformed-json", b'{"request_id": ', None, schema_rejects=False),
    bad("not-an-object", [], "$"),
    bad("unknown-field", batch(priority=1), "$"),
    bad("null-user", batch(user_id=None), "$.user_id"),
    bad("missing-user", WITHOUT_USER, "$"),
    bad("unknown-tier", batch(tier="gold"), "$.tier", UNKNOWN_TIER),
    bad(
        "tier-case",
        {**example(ImageRequested), "tier": "Basic"},
        "$.tier",
        UNKNOWN_TIER,
        ImageRequested,
    ),
    bad("zero-images", batch(images=[]), "$.images"),
    bad("501-images", many(501), "$.images", TOO_MANY),
    bad(
        "both-refs", ref({"bucket": "lumiku-in", "key": "a/b.png", "url": HTTPS}), "$.images[0].ref"
    ),
    bad("neither-ref", ref({}), "$.images[0].ref"),
    bad("bucket-no-key", ref({"bucket": "lumiku-in"}), "$.images[0].ref"),
    bad("http-url", ref({"url": "http://x.example/b.png"}), "$.images[0].ref.url"),
    bad(
        "key-dotdot",
        ref({"bucket": "lumiku-in", "key": "originals/u/../x.png"}),
        "$.images[0].ref.key",
    ),
    bad("bucket-upper", ref({"bucket": "Lumiku", "key": "a.png"}), "$.images[0].ref.bucket"),
    bad("ref-extra", ref({"url": HTTPS, "etag": "1"}), "$.images[0].ref"),
    bad("bad-colour", options(background="#FFF"), "$.options.background"),
    bad("filename-slash", image(filename="dir/a.png"), "$.images[0].filename"),
    bad("filename-backslash", image(filename="dir\\a.png"), "$.images[0].filename"),
    bad("filename-dotdot", image(filename=".."), "$.images[0].filename"),
    bad("filename-control", image(filename="a\nb.png"), "$.images[0].filename"),
    bad("filename-too-long", image(filename="a" * 252 + ".png"), "$.images[0].filename"),
    bad("negative-size", image(size_bytes=-1), "$.images[0].size_bytes"),
    bad("request-id-too-long", batch(request_id="r" * 129), "$.request_id"),
    bad("user-id-too-long", batch(user_id="u" * 65), "$.user_id"),
    bad("user-id-dot", batch(user_id="u.1"), "$.user_id"),
    bad("user-id-star", batch(user_id="u*"), "$.user_id"),
    bad("user-id-gt", batch(user_id="u>"), "$.user_id"),
    bad(
        "margin-without-crop",
        options(crop_to_subject=False, crop_margin=10),
        "$.options",
        schema_rejects=False,
    ),
    bad(
        "mask-with-background",
        options(mask_only=True, background="#000000"),
        "$.options",
        schema_rejects=False,
    ),
    bad("margin-too-big", options(crop_margin=5000), "$.options.crop_margin"),
    bad("bad-format", options(format="gif"), "$.options.format"),
    bad(
        "correlation-too-long",
        batch(correlation={"app": "web", "ref": "r" * 257}),
        "$.correlation.ref",
    ),
    bad("negative-count", quote(count=-1), "$.count", kind=QuoteRequest),
    bad("zero-count", quote(count=0), "$.count", kind=QuoteRequest),
    bad("count-501", quote(count=501), "$.count", TOO_MANY, QuoteRequest),
    bad("count-float", quote(count=2.5), "$.count", kind=QuoteRequest),
    bad("cancel-unknown-field", {**example(BatchCancel), "force": True}, "$", kind=BatchCancel),
    bad(
        "naive-time",
        {**example(WorkItem), "enqueued_at": "2025-01-31T01:15:00"},
        "$.enqueued_at",
        kind=WorkItem,
        schema_rejects=False,
    ),
    bad(
        "foreign-bad-tier",
        {**example(PoseGenerated), "removal": {"tier": "gold"}},
        "$.removal.tier",
        UNKNOWN_TIER,
        PoseGenerated,
    ),
]


def _raw(body: Any) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


@pytest.mark.parametrize(("kind", "body", "code", "path", "schema_rejects"), CASES)
def test_invalid_body_fails_with_code_and_path(
    kind: type[msgspec.Struct], body: Any, code: RejectCode, path: str | None, schema_rejects: bool
) -> None:
    with pytest.raises(ContractError) as caught:
        decode(kind, _raw(body))
    assert (caught.value.code, caught.value.path) == (code, path)
    assert caught.value.message
    assert " - at `" not in caught.value.message
    if schema_rejects:
        schema = json.loads((ROOT / schema_path(kind)).read_text(encoding="utf-8"))
        assert not jsonschema.Draft202012Validator(schema).is_valid(body)


def test_the_table_bodies_are_valid_before_their_change() -> None:
    for kind in (BatchRequested, ImageRequested, QuoteRequest, BatchCancel, WorkItem):
        decode(kind, _raw(example(kind)))  # the cases differ from a valid body by one change
    decode(BatchRequested, _raw(many(500)))
    decode(QuoteRequest, _raw(quote(count=500)))


@pytest.mark.parametrize("kind", message_types(), ids=lambda k: k.__name__)
def test_examples_round_trip(kind: type[msgspec.Struct]) -> None:
    message = decode(kind, _raw(example(kind)))
    again = decode(kind, encode(message))
    assert again == message
    assert encode(again) == encode(message)


def test_foreign_events_ignore_unknown_fields() -> None:
    body = {**example(PoseGenerated), "new_field": {"x": 1}}
    event = decode(PoseGenerated, _raw(body))
    assert event.pose_id == body["pose_id"]
    bare = decode(PoseGenerated, _raw({k: v for k, v in body.items() if k != "removal"}))
    assert bare.removal is None  # no removal asked: the user's setting decides


def test_decode_reply_gives_the_answer_or_the_error() -> None:
    ok = decode_reply(QuoteReply, _raw(example(QuoteReply)))
    error = decode_reply(QuoteReply, _raw(example(ErrorReply)))
    assert isinstance(ok, QuoteReply)
    assert ok.total == ok.base_total - ok.discount
    assert isinstance(error, ErrorReply)
    assert error.code is RejectCode.UNKNOWN_TIER
    with pytest.raises(ContractError) as caught:
        decode_reply(QuoteReply, b'{"status": "maybe"}')
    assert caught.value.path == "$.status"


def test_encoded_replies_carry_their_status_tag() -> None:
    assert json.loads(encode(ErrorReply(code=RejectCode.NOT_FOUND, message="no such batch"))) == {
        "status": "error",
        "code": "not_found",
        "message": "no such batch",
        "path": None,
    }
    assert json.loads(encode(decode(QuoteReply, _raw(example(QuoteReply)))))["status"] == "ok"


def test_error_text_is_one_line_so_the_error_reply_stays_valid() -> None:
    body = batch()
    body["note\n\x01"] = "x"
    with pytest.raises(ContractError) as caught:
        decode(BatchRequested, _raw(body))
    reply = caught.value.to_error_reply()
    assert "note\\n\\x01" in reply.message
    assert decode(ErrorReply, encode(reply)) == reply
    long = ContractError(RejectCode.INVALID_REQUEST, "x" * 5000, "$" + ".a" * 400)
    assert decode(ErrorReply, encode(long.to_error_reply())).message == "x" * 2000


def test_contract_error_becomes_an_error_reply() -> None:
    with pytest.raises(ContractError) as caught:
        decode(BatchRequested, _raw(batch(tier="gold")))
    reply = caught.value.to_error_reply()
    assert (reply.code, reply.path) == (RejectCode.UNKNOWN_TIER, "$.tier")
    assert "gold" in reply.message


@pytest.mark.parametrize(
    ("body", "request_id", "user_id", "app"),
    [
        (b"{not json", None, None, None),
        (b"[1, 2]", None, None, None),
        (_raw(batch(tier="gold")), batch()["request_id"], batch()["user_id"], "web"),
        (
            _raw(batch(user_id="a.b", correlation={"app": "Web!"})),
            batch()["request_id"],
            None,
            None,
        ),
        (_raw({"event_id": "evt-1", "user_id": "u1", "extra": 1}), "evt-1", "u1", None),
        (_raw({"request_id": 12, "user_id": ["x"]}), None, None, None),
    ],
    ids=["broken", "array", "bad-tier", "bad-user", "event-id", "wrong-types"],
)
def test_peek_identity_reads_only_valid_ids(
    body: bytes, request_id: str | None, user_id: str | None, app: str | None
) -> None:
    identity = peek_identity(body)
    assert identity.request_id == request_id
    assert identity.user_id == user_id
    assert (identity.correlation.app if identity.correlation else None) == app


DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        (PoseGenerated, b'{"event_id": "e", "user_id": "u", "junk": ' + DEEP + b"}"),
        (BatchRequested, b'{"request_id": "r", "user_id": "u", "x": ' + DEEP + b"}"),
        (BatchCancel, b'{"batch_id": "b", "user_id": "u", "reason": ' + DEEP + b"}"),
        (QuoteRequest, DEEP),
    ],
    ids=["foreign-unknown-field", "own-unknown-field", "typed-field", "top-level"],
)
def test_deeply_nested_bodies_are_invalid_requests(kind: type[Any], body: bytes) -> None:
    with pytest.raises(ContractError) as caught:
        decode(kind, body)
    assert caught.value.code is RejectCode.INVALID_REQUEST
    assert peek_identity(body) == Identity()  # too deep to read any id from


def test_peek_identity_never_raises_on_deep_nesting() -> None:
    assert peek_identity(b'{"request_id": "r1", "user_id": ' + DEEP + b"}") == Identity()


def test_image_ref_forms() -> None:
    stored = ImageRef(bucket="lumiku-in", key="originals/u1/a.png")
    assert stored.object == ObjectRef(bucket="lumiku-in", key="originals/u1/a.png")
    assert ImageRef(url="https://x.example/a.png").object is None
    assert json.loads(encode(stored)) == {"bucket": "lumiku-in", "key": "originals/u1/a.png"}
    with pytest.raises(ValueError, match="not both"):
        ImageRef(bucket="lumiku-in", key="k", url="https://x.example/a.png")


@pytest.mark.parametrize(
    ("fmt", "background", "mask_only", "effective"),
    [
        (OutputFormat.PNG, None, False, None),
        (OutputFormat.WEBP, "#112233", False, "#112233"),
        (OutputFormat.JPEG, None, False, "#FFFFFF"),
        (OutputFormat.JPEG, "#000000", False, "#000000"),
        (OutputFormat.JPEG, None, True, None),
    ],
)
def test_effective_background(
    fmt: OutputFormat, background: str | None, mask_only: bool, effective: str | None
) -> None:
    opts = OutputOptions(format=fmt, background=background, mask_only=mask_only)
    assert opts.effective_background == effective


def _reply(**changes: Any) -> Callable[[], QuoteReply]:
    base = msgspec.structs.asdict(decode(QuoteReply, _raw(example(QuoteReply))))
    return lambda: QuoteReply(**{**base, **changes})


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"total": 381}, "base_total - discount"),
        ({"accepted": False}, "reason"),
        ({"reason": RejectCode.INSUFFICIENT_CREDITS}, "reason"),
        ({"pricing_type": PricingType.SUBSCRIPTION}, "single image"),
    ],
)
def test_quote_reply_refuses_inconsistent_numbers(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _reply(**changes)()


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"failed": 0}, "equal total"),
        ({"status": "processing"}, "final status"),
        ({"credits_refunded": 25}, "exceeds credits_charged"),
        ({"archive": None}, "archive_url needs archive"),
    ],
)
def test_batch_completed_refuses_inconsistent_counts(changes: dict[str, Any], match: str) -> None:
    body = {**example(BatchCompleted), **changes}
    with pytest.raises(ContractError, match=match) as caught:
        decode(BatchCompleted, _raw(body))
    assert caught.value.path == "$"


def test_timestamps_are_aware_after_decoding() -> None:
    done = decode(BatchCompleted, _raw(example(BatchCompleted)))
    assert done.completed_at == datetime(2025, 1, 31, 1, 15, 9, 450000, tzinfo=UTC)
