"""LOG_FORMAT and ROLE settings, log lines (ids as fields, secrets masked), and settings
that never show a secret."""

import io
import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider

from lumiku_bgremover.observability.logs import (
    JsonFormatter,
    TextFormatter,
    configure_logging,
    current_ids,
    log_ids,
    redact,
)
from lumiku_bgremover.observability.tracing import Tracing
from lumiku_bgremover.settings import LogFormat, Role, Settings, SettingsError

SECRETS = {
    "DATABASE_URL": "postgresql://svc:db-pa55word@db:5432/lumiku",
    "S3_ENDPOINT": "minio:9000",
    "S3_ACCESS_KEY": "minio-user",
    "S3_SECRET_KEY": "s3-secret-value",
    "NATS_USER": "svc",
    "NATS_PASSWORD": "nats-pa55word",
    "NATS_TOKEN": "nats-token-value",
    "HF_TOKEN": "hf_token_value",
    "SEGMIND_API_KEY": "segmind-key-value",
}
SECRET_VALUES = (
    "db-pa55word", "s3-secret-value", "nats-pa55word", "nats-token-value", "hf_token_value",
    "segmind-key-value",
)  # fmt: skip


@pytest.mark.parametrize(
    ("env", "log_format", "role"),
    [
        ({}, LogFormat.TEXT, Role.ALL),
        ({"LOG_FORMAT": "json"}, LogFormat.JSON, Role.ALL),
        ({"LOG_FORMAT": "JSON", "ROLE": "Worker"}, LogFormat.JSON, Role.WORKER),
        ({"LOG_FORMAT": "text", "ROLE": "api"}, LogFormat.TEXT, Role.API),
        ({"LOG_FORMAT": " ", "ROLE": ""}, LogFormat.TEXT, Role.ALL),
        ({"ROLE": "all"}, LogFormat.TEXT, Role.ALL),
    ],
)
def test_log_format_and_role(env: dict[str, str], log_format: LogFormat, role: Role) -> None:
    settings = Settings.from_env(env)
    assert (settings.log_format, settings.role) == (log_format, role)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
        ({"LOG_FORMAT": "logfmt"}, "LOG_FORMAT"),
        ({"ROLE": "notifier"}, "ROLE"),
        ({"ROLE": "workers"}, "ROLE"),
    ],
)
def test_bad_log_format_or_role_names_its_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    assert info.value.variable == variable


@pytest.mark.parametrize(
    ("role", "works", "serves_requests"),
    [(Role.ALL, True, True), (Role.WORKER, True, False), (Role.API, False, True)],
)
def test_what_each_role_runs(role: Role, *, works: bool, serves_requests: bool) -> None:
    assert (role.works, role.serves_requests) == (works, serves_requests)


@pytest.mark.parametrize("login", ["NATS_USER", "NATS_TOKEN"])
def test_settings_never_show_a_secret(login: str) -> None:
    other = {"NATS_USER": ("NATS_TOKEN",), "NATS_TOKEN": ("NATS_USER", "NATS_PASSWORD")}[login]
    settings = Settings.from_env({k: v for k, v in SECRETS.items() if k not in other})
    for text in (repr(settings), str(settings)):
        for secret in SECRET_VALUES:
            assert secret not in text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://svc:pw@db:5432/x down", "postgresql://svc:***@db:5432/x down"),
        ("nats://u:p%40ss@nats:4222", "nats://u:***@nats:4222"),
        ("http://minio:9000/bucket", "http://minio:9000/bucket"),
        ("password=hunter2 user=x", "password=*** user=x"),
        ('{"api_key": "abc123", "n": 1}', '{"api_key": "***", "n": 1}'),
        ("x-api-key: k-1", "x-api-key: ***"),
        ("Authorization: Bearer", "Authorization: ***"),
        ("item b_1-000 done", "item b_1-000 done"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_redact_cuts_long_text() -> None:
    cut = redact("\x89PNG" + "x" * 10_000)
    assert len(cut) < 2100
    assert cut.endswith("more chars)")


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("lumiku_bgremover.test")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield stream
    logger.removeHandler(handler)


def parsed(stream: io.StringIO) -> list[dict[str, str]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_the_bound_ids_and_no_secret(lines: io.StringIO) -> None:
    log = logging.getLogger("lumiku_bgremover.test")
    with log_ids(batch_id="b_1", user_id="u_1"), log_ids(item_id="b_1-000", request_id=None):
        assert dict(current_ids()) == {"batch_id": "b_1", "user_id": "u_1", "item_id": "b_1-000"}
        log.info("item %s done via %s", "b_1-000", SECRETS["DATABASE_URL"])
    log.info("outside", extra={"item_id": "b_2-001"})
    inside, outside = parsed(lines)
    assert inside["message"] == "item b_1-000 done via postgresql://svc:***@db:5432/lumiku"
    assert (inside["batch_id"], inside["item_id"], inside["user_id"]) == ("b_1", "b_1-000", "u_1")
    assert (inside["level"], inside["logger"]) == ("INFO", "lumiku_bgremover.test")
    assert "request_id" not in inside
    assert outside["item_id"] == "b_2-001"
    assert "batch_id" not in outside


def test_json_lines_carry_the_trace_and_the_error(lines: io.StringIO) -> None:
    log = logging.getLogger("lumiku_bgremover.test")
    tracing = Tracing(TracerProvider())
    with tracing.span("bgremove.item") as span:
        try:
            raise RuntimeError("token=abc failed")
        except RuntimeError:
            log.exception("boom")
    [line] = parsed(lines)
    assert line["trace_id"] == f"{span.get_span_context().trace_id:032x}"
    assert "RuntimeError: token=*** failed" in line["error"]


def test_text_lines_append_the_ids() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello %s", ("you",), None)
    with log_ids(batch_id="b_9"):
        line = TextFormatter().format(record)
    assert line.endswith("INFO x hello you [batch_id=b_9]")


@pytest.mark.parametrize(("log_format", "kind"), [(LogFormat.JSON, JsonFormatter),
                                                  (LogFormat.TEXT, TextFormatter)])  # fmt: skip
def test_configure_logging_installs_one_handler(log_format: LogFormat, kind: type) -> None:
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    try:
        configure_logging("WARNING", log_format)
        [handler] = root.handlers
        assert isinstance(handler.formatter, kind)
        assert root.level == logging.WARNING
    finally:
        root.handlers[:] = saved
        root.setLevel(level)
