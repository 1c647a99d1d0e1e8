"""CloudEvents headers: built from arguments, read back, de-duplicable."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from lumiku_bgremover.contracts import cloudevents as ce

JAKARTA = timezone(timedelta(hours=7))
MOMENT = datetime(2025, 1, 31, 8, 15, 0, 250000, tzinfo=JAKARTA)


def headers(**changes: object) -> dict[str, str]:
    args: dict[str, object] = {
        "event_id": "4f1c0d2e9a7b6c5d",
        "event_type": "bgremove.item.done",
        "source": ce.DEFAULT_SOURCE,
        "time": MOMENT,
    } | changes
    return ce.event_headers(**args)  # type: ignore[arg-type]


def test_event_headers() -> None:
    assert headers() == {
        "ce-specversion": "1.0",
        "ce-id": "4f1c0d2e9a7b6c5d",
        "ce-type": "bgremove.item.done",
        "ce-source": "/lumiku/bgremover",
        "ce-time": "2025-01-31T01:15:00.250000Z",
        "Nats-Msg-Id": "4f1c0d2e9a7b6c5d",
    }


def test_time_without_fraction_is_plain_rfc3339() -> None:
    assert ce.format_time(datetime(2025, 1, 31, tzinfo=UTC)) == "2025-01-31T00:00:00Z"


def test_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        headers(time=datetime(2025, 1, 31, 8, 15))  # noqa: DTZ001


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("event_id", ""),
        ("event_id", "a b"),
        ("event_id", "a\r\nb"),
        ("event_type", "x" * 257),
        ("source", "é"),
    ],
)
def test_header_values_must_be_one_visible_token(field: str, value: str) -> None:
    with pytest.raises(ValueError, match="visible ASCII"):
        headers(**{field: value})


def test_headers_read_back() -> None:
    attributes = ce.read_event_headers(headers())
    assert attributes == ce.EventAttributes(
        "4f1c0d2e9a7b6c5d", "bgremove.item.done", ce.DEFAULT_SOURCE, MOMENT
    )
    assert ce.read_event_headers({"Nats-Msg-Id": "x"}) is None


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"ce-specversion": "0.3"}, "specversion"),
        ({"ce-id": ""}, "ce-id"),
        ({"ce-time": "2025-01-31T01:15:00"}, "offset"),
    ],
)
def test_broken_headers_are_refused(changes: dict[str, str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ce.read_event_headers(headers() | changes)


def test_stable_event_ids() -> None:
    one = ce.stable_event_id("bgremove.item.done", "b1", "b1:0")
    assert one == ce.stable_event_id("bgremove.item.done", "b1", "b1:0")
    assert len(one) == 32
    assert int(one, 16) >= 0
    assert one != ce.stable_event_id("bgremove.item.failed", "b1", "b1:0")
    assert ce.stable_event_id("ab", "c") != ce.stable_event_id("a", "bc")
    with pytest.raises(ValueError, match="non-empty"):
        ce.stable_event_id("a", "")
    assert headers(event_id=one)["Nats-Msg-Id"] == one
