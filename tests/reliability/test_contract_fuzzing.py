"""Hypothesis-generated bodies on every inbound subject of the in-process service.

Two kinds of body per subject: random JSON (and raw bytes), and near-valid bodies
made by mutating the subject's contract example (`contracts/examples/`): a field
deleted, replaced by any JSON value or a hostile string, an unknown field added.
The service runs in-process (`running_app`) on real NATS, PostgreSQL and S3.

What must hold: on the JetStream subjects every message is acknowledged once
(consumer: nothing pending, nothing awaiting an ack, nothing redelivered, so no
handler raised); every request-reply body gets a reply, `ok` or an `ErrorReply`
with a documented code, never `internal_error`; nothing is charged (no batch, no
ledger entry), and after the admin subjects only credit grants are in the ledger.

Examples are drawn by Hypothesis (derandomized: the same bodies every run) and then
sent; `FUZZ_EXAMPLES` per kind and subject in CI, `FUZZ_EXAMPLES_LONG` (random
seeds) in `make test-reliability`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

import msgspec
import nats
import nats.aio.client
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lumiku_bgremover.contracts import RejectCode, subjects
from lumiku_bgremover.db import connect
from lumiku_bgremover.provisioning import StreamNames, request_consumer_configs
from lumiku_bgremover.settings import S3Settings, Settings
from tests.integration.service import running_app, service_settings
from tests.reliability.harness import eventually

pytestmark = pytest.mark.integration

EXAMPLES: Final = Path(__file__).parents[2] / "contracts" / "examples"
FUZZ_EXAMPLES: Final = 60
FUZZ_EXAMPLES_LONG: Final = 600
STREAMED: Final = {
    subjects.BATCH_REQUESTED: "BatchRequested",
    subjects.IMAGE_REQUESTED: "ImageRequested",
    subjects.BATCH_CANCEL: "BatchCancel",
    subjects.AVATAR_PROJECT_COMPLETED: "AvatarProjectCompleted",
    subjects.POSE_GENERATED: "PoseGenerated",
    subjects.UPSCALER_COMPLETED: "UpscalerCompleted",
}
REPLIED: Final = {
    subjects.QUOTE: "QuoteRequest",
    subjects.BATCH_STATUS: "BatchStatusRequest",
    subjects.SETTINGS_GET: "SettingsGetRequest",
    subjects.SETTINGS_SET: "SettingsSetRequest",
    subjects.ADMIN_CREDITS_GRANT: "CreditGrantRequest",
    subjects.ADMIN_CREDITS_BALANCE: "CreditBalanceRequest",
    subjects.ADMIN_SUBSCRIPTION_SET: "SubscriptionSetRequest",
    subjects.ADMIN_SUBSCRIPTION_SHOW: "SubscriptionShowRequest",
}
HOSTILE_TEXT: Final = [
    "", "../../etc/passwd", "a.>", "*", "originals/someone-else/a.png", "\x00", "\u202e",
    "https://169.254.169.254/", "é" * 300, "9" * 40, "null", "-1", "1e309", "standard ",
    "__DEEP__",
]  # fmt: skip
#: Where a drawn value is "__DEEP__", the body gets an array nested this deep instead.
DEEP: Final = b"[" * 100_000 + b"]" * 100_000

SCALARS = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=20) | st.sampled_from(HOSTILE_TEXT)
)  # fmt: skip
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def encode(value: Any) -> bytes:
    """JSON bytes of `value`, with every "__DEEP__" string made a deeply nested array."""
    return json.dumps(value).encode().replace(b'"__DEEP__"', DEEP)


#: One mutation: (which path, what to do, the value it puts there).
MUTATION = st.tuples(st.integers(0, 10_000), st.sampled_from(["delete", "replace", "add"]), JSON)


def example(name: str) -> Any:
    return json.loads((EXAMPLES / f"{name}.json").read_text())


def paths(value: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into `value` (dict keys, list indices), the root first."""
    found = [at]
    children = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else []
    )
    for key, child in children:
        found += paths(child, (*at, key))
    return found


def mutate(body: Any, mutations: list[tuple[int, str, Any]]) -> Any:
    """`body` (a copy) with each mutation applied at the path its number picks."""
    body = json.loads(json.dumps(body))
    for pick, operation, value in mutations:
        candidates = paths(body)
        path = candidates[pick % len(candidates)]
        if not path:
            body = value if operation == "replace" else body
            continue
        *parents, last = path
        holder = body
        for key in parents:
            holder = holder[key]
        if operation == "delete":
            del holder[last]
        elif operation == "replace":
            holder[last] = value
        elif isinstance(holder, dict):
            holder[f"unknown_{pick}"] = value
    return body


def near_valid(name: str) -> st.SearchStrategy[bytes]:
    base = example(name)
    return st.lists(MUTATION, min_size=1, max_size=3).map(lambda ms: encode(mutate(base, ms)))


RANDOM = st.one_of(JSON.map(encode), st.binary(max_size=64))


def draw(strategy: st.SearchStrategy[bytes], count: int, *, derandomize: bool) -> list[bytes]:
    """`count` bodies drawn by Hypothesis (the same ones every run when derandomized)."""
    found: list[bytes] = []

    @settings(max_examples=count, derandomize=derandomize, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(strategy)
    def collect(body: bytes) -> None:
        found.append(body)

    collect()
    return found


def bodies(name: str, count: int, *, derandomize: bool) -> list[bytes]:
    return draw(RANDOM, count, derandomize=derandomize) + draw(
        near_valid(name), count, derandomize=derandomize
    )


@pytest.fixture
async def fuzzed(
    nats_url: str, nats_namespace: str, migrated_database_url: str, s3_settings: S3Settings
) -> AsyncIterator[tuple[Settings, nats.aio.client.Client]]:
    config = service_settings(
        nats_url, nats_namespace, migrated_database_url, s3_settings, admin=True
    )
    async with running_app(config):
        nc = await nats.connect(nats_url)
        try:
            yield config, nc
        finally:
            await nc.close()


def consumers(config: Settings) -> dict[str, tuple[str, str]]:
    """Base subject -> (stream, durable) of every JetStream inbound subject."""
    requests = StreamNames.of(config.nats).requests
    found = {s: (requests, c.durable_name or "") for s, c in
             request_consumer_configs(config.nats).items()}  # fmt: skip
    for binding in config.integrations.bindings(config.nats.stream_prefix):
        found[binding.subject] = (binding.stream, binding.durable)
    return found


async def settled(nc: nats.aio.client.Client, stream: str, durable: str) -> tuple[int, int, int]:
    info = await nc.jetstream().consumer_info(stream, durable)
    return (info.num_pending or 0, info.num_ack_pending or 0, info.num_redelivered or 0)


async def charged(config: Settings) -> tuple[int, list[str]]:
    async with connect(config.require_database().url) as conn:
        batches = await conn.fetchval("SELECT count(*) FROM batches")
        reasons = await conn.fetch("SELECT DISTINCT reason FROM credit_ledger ORDER BY reason")
    return int(batches), [r["reason"] for r in reasons]


async def fuzz_streams(
    config: Settings, nc: nats.aio.client.Client, count: int, derandomize: bool
) -> None:
    js, prefix = nc.jetstream(), config.nats.subject_prefix
    where = consumers(config)
    assert set(where) == set(STREAMED)
    for subject, name in STREAMED.items():
        for body in bodies(name, count, derandomize=derandomize):
            await js.publish(subjects.with_prefix(prefix, subject), body, timeout=10)
    for subject, (stream, durable) in where.items():

        async def drained(stream: str = stream, durable: str = durable) -> bool:
            pending, ack_pending, _ = await settled(nc, stream, durable)
            return pending == ack_pending == 0

        await eventually(drained, 120, f"{subject} drained")
        assert await settled(nc, stream, durable) == (0, 0, 0), subject


async def fuzz_replies(
    config: Settings, nc: nats.aio.client.Client, count: int, derandomize: bool
) -> None:
    prefix, codes = config.nats.subject_prefix, {c.value for c in RejectCode}
    wrong: list[str] = []
    for subject, name in REPLIED.items():
        for body in bodies(name, count, derandomize=derandomize):
            reply = msgspec.json.decode(
                (await nc.request(subjects.with_prefix(prefix, subject), body, timeout=10)).data
            )
            bad_error = reply.get("status") == "error" and (
                reply.get("code") not in codes or reply["code"] == RejectCode.INTERNAL_ERROR
            )
            if reply.get("status") not in {"ok", "error"} or bad_error:
                wrong.append(f"{subject} {body[:200]!r} -> {reply}")
    assert wrong == []


@pytest.mark.parametrize(
    ("count", "derandomize"),
    [
        pytest.param(FUZZ_EXAMPLES, True, id="ci"),
        pytest.param(FUZZ_EXAMPLES_LONG, False, id="long", marks=pytest.mark.long),
    ],
)
@pytest.mark.timeout(600)
async def test_fuzzed_bodies_never_crash_stall_or_charge(
    fuzzed: tuple[Settings, nats.aio.client.Client], count: int, derandomize: bool
) -> None:
    config, nc = fuzzed
    await fuzz_streams(config, nc, count, derandomize)
    assert await charged(config) == (0, [])
    await fuzz_replies(config, nc, count, derandomize)
    batches, reasons = await charged(config)
    assert batches == 0
    assert set(reasons) <= {"grant", "purchase", "adjustment"}  # admin grants only
