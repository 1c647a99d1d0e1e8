"""Hosted engines misbehaving: the service (a real subprocess) against the fake providers.

The standard tier routes to Hugging Face (hf-inference, `briaai/RMBG-1.4`) on the fake
server, Segmind's fake is its fallback where a test gives it one. The fakes answer
503 "model loading", 429 with `Retry-After`, 5xx, hangs longer than the engine
timeout, and 200s a client cannot use (not JSON, JSON of another shape, a mask that is
not base64, a colour photo where the mask belongs), either queued for the next
requests or as a rule for every request carrying one image (told apart by its width).

Transient faults are retried and every item ends done; a storm opens Hugging Face's
breaker and Segmind serves the rest (rows say which engine served each image);
permanent faults fail their items with the documented code, refunded at the end.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest

from lumiku_bgremover.contracts import subjects
from lumiku_bgremover.engines.fakes import FakeHuggingFace, FakeSegmind, Fault, Recorded
from lumiku_bgremover.engines.fakes.scenario import HostedFakes, hosted_fakes
from tests.integration.pipeline_harness import Client, batch_request, photo
from tests.reliability.outcomes import Outcome, assert_outcome, item_rows
from tests.reliability.stack import (
    Stack,
    assert_all_done,
    client_of,
    standard_price,
    wait_batches_completed,
)

pytestmark = pytest.mark.timeout(300)

HF_MODEL = "briaai/RMBG-1.4"
#: Quick retries, a timeout the hangs outlast, and a breaker that stays shut unless a
#: test says otherwise (an open breaker without a fallback would only delay the items).
RESILIENCE = {
    "ENGINE_TIMEOUT_S": "3", "ENGINE_ATTEMPTS": "3", "ENGINE_BACKOFF_BASE_S": "0.05",
    "ENGINE_BACKOFF_CAP_S": "0.2", "ENGINE_MAX_WAIT_S": "5",
    "ENGINE_BREAKER_FAILURES": "1000", "ENGINE_BREAKER_COOLDOWN_S": "300",
}  # fmt: skip
#: Longer than ENGINE_TIMEOUT_S: the call is cut off and tried again.
HANG = Fault("slow", seconds=8)


@pytest.fixture
def fakes() -> Iterator[HostedFakes]:
    with hosted_fakes() as both:
        yield both


def hosted_env(fakes: HostedFakes, **extra: str) -> dict[str, str]:
    """The standard tier on the fake Hugging Face; other tiers stay on the fake engine."""
    hf, sg = fakes.huggingface, fakes.segmind
    routing = f"basic=fake:x,standard=huggingface:{HF_MODEL},professional=fake:x,industry=fake:x"
    return {
        "TIER_ROUTING": routing, "HOSTED_WITHOUT_KEY": "error",
        "HF_TOKEN": hf.token, "HF_ENDPOINT": f"{hf.url}/hf-inference", "HF_ROUTER_URL": hf.url,
        "SEGMIND_API_KEY": sg.api_key, "SEGMIND_ENDPOINT": sg.url,
        **RESILIENCE, **extra,
    }  # fmt: skip


async def submit(client: Client, user: str, widths: list[int], request_id: str) -> None:
    """Grant 1000 credits and request one standard batch of photos `widths` wide."""
    await client.grant(user, 1000)
    refs = [
        await client.upload(user, f"p{i}.png", photo(i, (width, 64)))
        for i, width in enumerate(widths)
    ]
    await client.publish(subjects.BATCH_REQUESTED, batch_request(request_id, user, refs))


def width_of(server: FakeHuggingFace | FakeSegmind, request: Recorded) -> int:
    image = server.sent_image(request)
    return image.width if image is not None else 0


def inference_calls(server: FakeHuggingFace) -> int:
    return sum(r.path == f"/hf-inference/models/{HF_MODEL}" for r in server.requests)


TRANSIENT = [
    Fault("loading", seconds=0.2), Fault("rate_limited", seconds=0.5),
    Fault.http(500), Fault.http(502), Fault.http(503), HANG,
    Fault("garbage"), Fault("wrong_shape"), Fault("bad_base64"), Fault("not_a_mask"),
]  # fmt: skip


async def test_transient_engine_faults_are_retried_and_every_item_is_done(
    stack: Stack, fakes: HostedFakes
) -> None:
    count = 10
    fakes.huggingface.push(*TRANSIENT)
    service = await stack.service("worker", **hosted_env(fakes)).start()
    try:
        async with client_of(stack) as client:
            await submit(client, "ann", [96] * count, "transient")
            await wait_batches_completed(stack.database_url, 1, 120)
            await assert_all_done(stack, client, "ann", count)
    finally:
        service.proc.kill()
    rows = await item_rows(stack.database_url)
    assert [(r["engine"], r["engine_fallback"]) for r in rows] == [("huggingface", False)] * count
    # every fault took one request, every item one answered request: none lost or doubled
    assert inference_calls(fakes.huggingface) == count + len(TRANSIENT)


@pytest.mark.parametrize(
    "storm",
    [
        pytest.param(Fault("rate_limited", seconds=0.3), id="429-retry-after"),
        pytest.param(Fault.http(503), id="503", marks=pytest.mark.long),
    ],
)
async def test_a_storm_opens_the_breaker_and_the_fallback_serves(
    stack: Stack, fakes: HostedFakes, storm: Fault
) -> None:
    count, served_first, breaker = 8, 2, 3
    fakes.huggingface.push(*[Fault("slow", seconds=0)] * served_first, *[storm] * 20)
    env = hosted_env(
        fakes, TIER_FALLBACK="standard=segmind:birefnet-general", WORKER_CONCURRENCY="1",
        ENGINE_BREAKER_FAILURES=str(breaker),
    )  # fmt: skip
    service = await stack.service("worker", **env).start()
    try:
        async with client_of(stack) as client:
            await submit(client, "ann", [96] * count, "storm")
            await wait_batches_completed(stack.database_url, 1, 120)
            await assert_all_done(stack, client, "ann", count)
    finally:
        service.proc.kill()
    rows = await item_rows(stack.database_url)
    served = Counter((r["engine"], r["engine_fallback"]) for r in rows)
    assert served == {("huggingface", False): served_first, ("segmind", True): count - served_first}
    # the third item's three attempts opened the breaker: no call to Hugging Face after it
    assert inference_calls(fakes.huggingface) == served_first + breaker
    assert len(fakes.segmind.requests) == count - served_first
    assert "circuit breaker is open" in service.proc.log()


#: Poisoned images, by width: what the fake answers every request carrying one, and the
#: code its item fails with (after the last delivery for the retryable ones).
POISON = {
    97: (Fault.http(400), "engine_failed"),  # the image refused: fails at once
    98: (Fault("garbage"), "engine_failed"),
    99: (Fault("not_a_mask"), "engine_failed"),
    100: (Fault("credits"), "engine_unavailable"),  # 402: out of credits
}


async def test_permanent_engine_faults_fail_their_items_with_the_code_and_a_refund(
    stack: Stack, fakes: HostedFakes
) -> None:
    hf = fakes.huggingface
    for width, (fault, _) in POISON.items():
        hf.always(lambda r, w=width: width_of(hf, r) == w, fault)  # type: ignore[misc]
    widths = [96, 96, *POISON]
    env = hosted_env(fakes, WORK_MAX_DELIVER="2")
    service = await stack.service("worker", **env).start()
    try:
        async with client_of(stack) as client:
            await submit(client, "ann", widths, "permanent")
            await wait_batches_completed(stack.database_url, 1, 120)
            failed = {i: POISON[w][1] for i, w in enumerate(widths) if w in POISON}
            price = standard_price(len(widths))
            want = Outcome(len(widths), failed, price=price, per_image=price // len(widths))
            await assert_outcome(stack, client, "ann", want)
    finally:
        service.proc.kill()
    calls = Counter(width_of(hf, r) for r in hf.requests)
    # 400 is never retried; the others: 3 attempts on each of the 2 deliveries
    assert calls == {96: 2, 97: 1, 98: 6, 99: 6, 100: 6}
