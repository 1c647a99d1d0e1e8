"""One engine suite, run against each hosted engine and its fake server (real sockets).

The fake servers answer as the providers document (see `engines.fakes.providers`);
each test body runs for Hugging Face's hf-inference route, its fal provider route
(submit, poll, fetch) and Segmind.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx
import pytest
from PIL import Image, ImageDraw

from lumiku_bgremover.contracts.codes import FailCode
from lumiku_bgremover.engine_settings import DEFAULT_HF_PROVIDERS, Resilience
from lumiku_bgremover.engines import Engine, EngineError
from lumiku_bgremover.engines.fake import fake_matte
from lumiku_bgremover.engines.fakes import FakeHuggingFace, FakeSegmind, FakeServer, Fault
from lumiku_bgremover.engines.hosted import ProviderError, alpha_of
from lumiku_bgremover.engines.huggingface import HuggingFaceEngine
from lumiku_bgremover.engines.resilience import EngineTimeout, Resilient
from lumiku_bgremover.engines.segmind import SegmindEngine


@dataclass
class Case:
    server: FakeServer
    engine: Engine
    model: str
    polls: list[float]


async def no_sleep(seconds: float) -> None:
    del seconds


def hf_case(client: httpx.AsyncClient, model: str, token: str = "hf_test") -> Case:
    server = FakeHuggingFace().start()
    polls: list[float] = []

    async def poll_sleep(seconds: float) -> None:
        polls.append(seconds)

    engine = HuggingFaceEngine(
        client, token=token, endpoint=f"{server.url}/hf-inference", router=server.url,
        providers=DEFAULT_HF_PROVIDERS, sleep=poll_sleep,
    )  # fmt: skip
    return Case(server, engine, model, polls)


def segmind_case(client: httpx.AsyncClient, model: str, token: str = "SG_test") -> Case:
    server = FakeSegmind().start()
    return Case(server, SegmindEngine(client, api_key=token, endpoint=server.url), model, [])


BUILDERS: dict[str, tuple[Callable[..., Case], str]] = {
    "hf-inference": (hf_case, "briaai/RMBG-1.4"),
    "hf-fal": (hf_case, "briaai/RMBG-2.0"),
    "segmind": (segmind_case, "birefnet-general"),
}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10.0) as http:
        yield http


@pytest.fixture(params=sorted(BUILDERS))
async def case(request: pytest.FixtureRequest, client: httpx.AsyncClient) -> AsyncIterator[Case]:
    build, model = BUILDERS[request.param]
    made = build(client, model)
    yield made
    made.server.stop()


def subject() -> Image.Image:
    image = Image.new("RGB", (96, 64), (250, 250, 250))
    ImageDraw.Draw(image).ellipse((20, 10, 76, 54), fill=(30, 90, 200))
    return image


async def test_is_an_engine_and_gives_the_providers_matte(case: Case) -> None:
    assert isinstance(case.engine, Engine)
    matte = await case.engine.matte(subject(), model=case.model)
    assert (matte.mode, matte.size) == ("L", (96, 64))
    assert matte.tobytes() == fake_matte(subject()).tobytes()


async def test_credentials_travel_as_documented(case: Case) -> None:
    await case.engine.matte(subject(), model=case.model)
    first = case.server.requests[0]
    if isinstance(case.server, FakeSegmind):
        assert first.headers["x-api-key"] == "SG_test"
        assert "authorization" not in first.headers
        assert first.headers["content-type"] == "application/json"
    else:
        assert first.headers["authorization"] == "Bearer hf_test"


@pytest.mark.parametrize(
    ("fault", "code", "retryable"),
    [
        (Fault.http(400), FailCode.ENGINE_FAILED, False),
        (Fault.http(401), FailCode.ENGINE_UNAVAILABLE, False),
        (Fault.http(403), FailCode.ENGINE_UNAVAILABLE, False),
        (Fault.http(404), FailCode.ENGINE_UNAVAILABLE, False),
        (Fault("credits"), FailCode.ENGINE_UNAVAILABLE, True),
        (Fault("rate_limited", seconds=7), FailCode.ENGINE_UNAVAILABLE, True),
        (Fault("loading", seconds=20), FailCode.ENGINE_UNAVAILABLE, True),
        (Fault.http(500), FailCode.ENGINE_UNAVAILABLE, True),
        (Fault.http(502), FailCode.ENGINE_UNAVAILABLE, True),
        (Fault("garbage"), FailCode.ENGINE_FAILED, True),
        (Fault("wrong_shape"), FailCode.ENGINE_FAILED, True),
        (Fault("bad_base64"), FailCode.ENGINE_FAILED, True),
        (Fault("not_a_mask"), FailCode.ENGINE_FAILED, True),
    ],
    ids=lambda value: getattr(value, "kind", None) and f"{value.kind}{value.status or ''}",
)
async def test_every_error_class_is_typed(
    case: Case, fault: Fault, code: FailCode, retryable: bool
) -> None:
    case.server.push(fault)
    with pytest.raises(ProviderError) as caught:
        await case.engine.matte(subject(), model=case.model)
    assert (caught.value.code, caught.value.retryable) == (code, retryable), str(caught.value)
    assert caught.value.provider == case.engine.name


async def test_rate_limits_say_how_long_to_wait(case: Case) -> None:
    case.server.push(Fault("rate_limited", seconds=7))
    with pytest.raises(ProviderError) as caught:
        await case.engine.matte(subject(), model=case.model)
    assert caught.value.status == 429
    assert caught.value.retry_after_s is not None
    assert 5.0 <= caught.value.retry_after_s <= 7.0


async def test_a_loading_model_says_when_it_is_ready(case: Case) -> None:
    case.server.push(Fault("loading", seconds=20))
    with pytest.raises(ProviderError) as caught:
        await case.engine.matte(subject(), model=case.model)
    assert caught.value.status == 503
    hf = isinstance(case.server, FakeHuggingFace)
    assert caught.value.retry_after_s == (20.0 if hf else None)
    if hf:
        assert "currently loading" in str(caught.value)


async def test_a_wrong_key_is_refused_and_not_retryable(client: httpx.AsyncClient) -> None:
    for name, (build, model) in BUILDERS.items():
        made = build(client, model, "wrong")
        try:
            with pytest.raises(ProviderError) as caught:
                await made.engine.matte(subject(), model=model)
        finally:
            made.server.stop()
        assert (caught.value.status, caught.value.retryable) == (401, False), name
        assert caught.value.code is FailCode.ENGINE_UNAVAILABLE


async def test_an_unknown_model_is_not_servable(case: Case) -> None:
    model = "nobody/none" if isinstance(case.server, FakeHuggingFace) else "no-such-model"
    with pytest.raises(ProviderError) as caught:
        await case.engine.matte(subject(), model=model)
    assert (caught.value.status, caught.value.retryable) == (404, False)


async def test_an_unreachable_provider_is_retryable(case: Case) -> None:
    case.server.stop()
    with pytest.raises(ProviderError) as caught:
        await case.engine.matte(subject(), model=case.model)
    assert (caught.value.status, caught.value.retryable) == (None, True)


async def test_a_slow_answer_times_out_as_retryable(case: Case) -> None:
    case.server.push(Fault("slow", seconds=30))
    resilient = Resilient(case.engine, Resilience(attempts=1), timeout_s=0.3, clock=lambda: 0.0)
    with pytest.raises(EngineTimeout) as caught:
        await resilient.call(subject(), case.model)
    assert (caught.value.code, caught.value.retryable) == (FailCode.ENGINE_UNAVAILABLE, True)


async def test_retries_honour_retry_after_then_succeed(case: Case) -> None:
    case.server.push(Fault("rate_limited", seconds=3), Fault.http(502))
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    policy = Resilience(attempts=3, backoff_base_s=0.5, backoff_cap_s=4.0)
    resilient = Resilient(case.engine, policy, timeout_s=10, clock=lambda: 0.0, sleep=sleep,
                          jitter=lambda: 1.0)  # fmt: skip
    done = await resilient.call(subject(), case.model)
    assert done.attempts == 3
    assert done.matte.tobytes() == fake_matte(subject()).tobytes()
    assert 2.0 <= waits[0] <= 3.0  # at least what the provider asked (Segmind: a reset time)
    assert waits[1] == 1.0  # then backoff: base * 2 ** 1, full jitter at 1.0


async def test_a_wait_longer_than_allowed_is_left_to_the_work_queue(case: Case) -> None:
    case.server.push(Fault("rate_limited", seconds=120))
    resilient = Resilient(case.engine, Resilience(attempts=3, max_wait_s=30), timeout_s=10,
                          clock=lambda: 0.0, sleep=no_sleep)  # fmt: skip
    with pytest.raises(ProviderError) as caught:
        await resilient.call(subject(), case.model)
    assert caught.value.retryable
    assert len(case.server.requests) == 1


async def test_fal_route_submits_polls_and_fetches(client: httpx.AsyncClient) -> None:
    made = hf_case(client, "briaai/RMBG-2.0")
    assert isinstance(made.server, FakeHuggingFace)
    made.server.polls_before_done = 3
    try:
        matte = await made.engine.matte(subject(), model="briaai/RMBG-2.0")
    finally:
        made.server.stop()
    assert matte.tobytes() == fake_matte(subject()).tobytes()
    paths = [(r.method, r.path) for r in made.server.requests]
    assert paths[0] == ("POST", "/fal-ai/fal-ai/bria/background/remove")
    assert made.server.requests[0].query == {"_subdomain": ["queue"]}
    assert paths[1:4] == [("GET", "/fal-ai/fal-ai/bria/requests/req-0001/status")] * 3
    assert paths[4] == ("GET", "/fal-ai/fal-ai/bria/requests/req-0001")
    assert made.polls == [0.5, 0.5, 0.5]


async def test_segmind_out_of_credits_after_the_balance_runs_out(
    client: httpx.AsyncClient,
) -> None:
    server = FakeSegmind(balance=1).start()
    engine = SegmindEngine(client, api_key="SG_test", endpoint=server.url)
    try:
        await engine.matte(subject(), model="birefnet-general")
        with pytest.raises(ProviderError) as caught:
            await engine.matte(subject(), model="birefnet-general")
    finally:
        server.stop()
    assert (caught.value.status, caught.value.retryable) == (406, True)
    assert "Insufficient credits" in str(caught.value)


async def test_segmind_model_names_are_configuration(client: httpx.AsyncClient) -> None:
    server = FakeSegmind(models=("bg-removal-v2",)).start()
    engine = SegmindEngine(client, api_key="SG_test", endpoint=server.url,
                           models={"birefnet-general": "bg-removal-v2"})  # fmt: skip
    try:
        matte = await engine.matte(subject(), model="birefnet-general")
    finally:
        server.stop()
    assert matte.size == (96, 64)
    assert server.requests[0].path == "/v1/bg-removal-v2"


async def test_non_rgb_input_is_sent_as_rgb(case: Case) -> None:
    matte = await case.engine.matte(subject().convert("RGBA"), model=case.model)
    assert matte.tobytes() == fake_matte(subject()).tobytes()


def test_engine_errors_are_engine_errors() -> None:
    assert issubclass(ProviderError, EngineError)


@pytest.mark.parametrize(
    ("mode", "colour", "grey"),
    [("L", 90, 90), ("RGB", (90, 90, 90), 90), ("RGB", (90, 94, 88), 92), ("LA", (0, 77), 77)],
)
def test_a_grey_answer_or_an_alpha_channel_is_a_matte(
    mode: str, colour: int | tuple[int, ...], grey: int
) -> None:
    matte = alpha_of(Image.new(mode, (4, 3), colour), (4, 3))
    assert (matte.mode, matte.getextrema()) == ("L", (grey, grey))


def test_a_colour_photo_without_alpha_is_no_matte() -> None:
    with pytest.raises(ValueError, match="colour image without alpha is not a matte"):
        alpha_of(subject(), (96, 64))


async def test_a_rule_answers_every_matching_image_and_leaves_the_rest(case: Case) -> None:
    wide = Image.new("RGB", (97, 64), (250, 250, 250))
    server = case.server
    assert isinstance(server, FakeHuggingFace | FakeSegmind)
    server.always(lambda r: getattr(server.sent_image(r), "width", 0) == 97, Fault.http(400))
    for _ in range(2):
        with pytest.raises(ProviderError) as caught:
            await case.engine.matte(wide, model=case.model)
        assert (caught.value.status, caught.value.retryable) == (400, False)
    matte = await case.engine.matte(subject(), model=case.model)
    assert matte.tobytes() == fake_matte(subject()).tobytes()
