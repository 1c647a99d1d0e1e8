"""The ONNX engine, on tiny models built here with the `onnx` helper API."""

from __future__ import annotations

import asyncio
import hashlib
import math
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from lumiku_bgremover.contracts.codes import FailCode
from lumiku_bgremover.engine_settings import ModelSource
from lumiku_bgremover.engines import Engine, EngineError, ModelNotFound, WeightsUnavailable
from lumiku_bgremover.engines.catalogue import DEFAULT_SOURCES
from lumiku_bgremover.engines.local import (
    HALF,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MODEL_SPECS,
    ONE,
    ModelSpec,
    OnnxEngine,
    available_providers,
    choose_providers,
    local_engine,
    postprocess,
)
from lumiku_bgremover.engines.weights import WeightsFetchError

S = 32
MEAN_SPEC = ModelSpec(name="tiny", size=S, mean=HALF, std=ONE, output="minmax", input_name="input")


def save_model(
    path: Path,
    nodes: list[onnx.NodeProto],
    *,
    size: int = S,
    input_type: int = TensorProto.FLOAT,
    initializers: list[onnx.TensorProto] | None = None,
) -> Path:
    """A model `input` [1,3,size,size] -> `output` [1,1,size,size] computed by `nodes`."""
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", input_type, [1, 3, size, size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, size, size])],
        initializer=initializers or [],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def channel_mean(source: str = "input") -> onnx.NodeProto:
    return helper.make_node("ReduceMean", [source], ["output"], axes=[1], keepdims=1)


@pytest.fixture
def mean_model(tmp_path: Path) -> Path:
    return save_model(tmp_path / "mean.onnx", [channel_mean()])


@pytest.fixture
def red_model(tmp_path: Path) -> Path:
    """output = the first (red) channel, unchanged: shows layout and channel order."""
    starts = numpy_helper.from_array(np.array([0], dtype=np.int64), "starts")
    ends = numpy_helper.from_array(np.array([1], dtype=np.int64), "ends")
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    node = helper.make_node("Slice", ["input", "starts", "ends", "axes"], ["output"])
    return save_model(tmp_path / "red.onnx", [node], initializers=[starts, ends, axes])


def engine_for(path: Path, *specs: ModelSpec, threads: int | None = None) -> OnnxEngine:
    table = {spec.name: spec for spec in specs or (MEAN_SPEC,)}
    return OnnxEngine(lambda _model: path, specs=table, intra_op_num_threads=threads)


def halves(size: tuple[int, int] = (300, 200)) -> Image.Image:
    """White left half, black right half."""
    image = Image.new("RGB", size, (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, size[0] // 2, size[1]))
    return image


async def test_is_an_engine(mean_model: Path) -> None:
    engine = engine_for(mean_model)
    assert isinstance(engine, Engine)
    assert engine.name == "local"
    assert engine.models == ["tiny"]


async def test_minmax_matte_follows_the_image_at_its_own_size(mean_model: Path) -> None:
    matte = await engine_for(mean_model).matte(halves((300, 200)), model="tiny")
    assert matte.mode == "L"
    assert matte.size == (300, 200)
    pixels = np.asarray(matte)
    assert pixels[:, :130].min() == 255
    assert pixels[:, 170:].max() == 0


@pytest.mark.parametrize("size", [(317, 123), (5, 900), (32, 32), (1, 1)])
async def test_matte_is_resized_back_exactly(mean_model: Path, size: tuple[int, int]) -> None:
    matte = await engine_for(mean_model).matte(Image.new("RGB", size, (9, 9, 9)), model="tiny")
    assert matte.size == size
    assert matte.mode == "L"


async def test_layout_and_channel_order(red_model: Path) -> None:
    """Red ramps left to right, green top to bottom: the matte must be red's ramp."""
    x = np.linspace(0, 255, 64, dtype=np.float32)
    red = np.tile(x, (48, 1))
    green = np.tile(x[:48, np.newaxis], (1, 64))
    rgb = np.stack([red, green, np.zeros_like(red)], axis=-1).astype(np.uint8)
    matte = np.asarray(await engine_for(red_model).matte(Image.fromarray(rgb), model="tiny"))
    columns = matte.astype(int).mean(axis=0)
    assert np.all(np.diff(columns) >= 0)
    assert columns[0] < 10
    assert columns[-1] > 245
    assert np.ptp(matte.astype(int).mean(axis=1)) < 3  # no vertical (green) structure


async def test_normalisation_and_sigmoid(mean_model: Path) -> None:
    colour = (200, 30, 90)
    spec = ModelSpec(name="net", size=S, mean=IMAGENET_MEAN, std=IMAGENET_STD, output="sigmoid")
    matte = await engine_for(mean_model, spec).matte(
        Image.new("RGB", (40, 50), colour), model="net"
    )
    normalised = [
        (value / 255 - mean) / std
        for value, mean, std in zip(colour, IMAGENET_MEAN, IMAGENET_STD, strict=True)
    ]
    expected = 255 / (1 + math.exp(-sum(normalised) / 3))
    assert set(np.asarray(matte).ravel()) == {round(expected)}


async def test_uniform_output_with_minmax_is_all_background(mean_model: Path) -> None:
    matte = await engine_for(mean_model).matte(
        Image.new("RGB", (20, 20), (90, 90, 90)), model="tiny"
    )
    assert np.asarray(matte).max() == 0


async def test_float16_input_models_get_float16(tmp_path: Path) -> None:
    cast = helper.make_node("Cast", ["input"], ["as_float"], to=TensorProto.FLOAT)
    path = save_model(
        tmp_path / "half.onnx", [cast, channel_mean("as_float")], input_type=TensorProto.FLOAT16
    )
    matte = await engine_for(path).matte(halves((64, 64)), model="tiny")
    assert np.asarray(matte)[:, :28].min() == 255


async def test_first_input_is_used_when_the_spec_names_none(mean_model: Path) -> None:
    spec = ModelSpec(name="anon", size=S, mean=HALF, std=ONE, output="minmax")
    matte = await engine_for(mean_model, spec).matte(halves(), model="anon")
    assert np.asarray(matte)[:, :130].min() == 255


async def test_unknown_model_is_model_not_found_before_any_weights_lookup() -> None:
    looked_up: list[str] = []

    def locate(model: str) -> Path:
        looked_up.append(model)
        raise AssertionError("must not be called")

    engine = OnnxEngine(locate, specs={"tiny": MEAN_SPEC})
    with pytest.raises(ModelNotFound) as caught:
        await engine.matte(halves(), model="isnet-large")
    assert caught.value.code is FailCode.ENGINE_UNAVAILABLE
    assert caught.value.retryable is False
    assert "tiny" in str(caught.value)
    assert looked_up == []


async def test_session_is_created_once_across_concurrent_calls(mean_model: Path) -> None:
    calls: list[str] = []

    def locate(model: str) -> Path:
        calls.append(model)
        time.sleep(0.05)
        return mean_model

    engine = OnnxEngine(locate, specs={"tiny": MEAN_SPEC}, intra_op_num_threads=1)
    mattes = await asyncio.gather(*(engine.matte(halves(), model="tiny") for _ in range(6)))
    assert calls == ["tiny"]
    assert len({m.tobytes() for m in mattes}) == 1


async def test_weights_failures_propagate_and_are_retried_next_time(mean_model: Path) -> None:
    outcomes: list[Path | Exception] = [
        WeightsUnavailable("registry down", retryable=True),
        mean_model,
    ]

    def locate(model: str) -> Path:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    engine = OnnxEngine(locate, specs={"tiny": MEAN_SPEC})
    with pytest.raises(WeightsUnavailable) as caught:
        await engine.matte(halves(), model="tiny")
    assert caught.value.code is FailCode.ENGINE_UNAVAILABLE
    assert (await engine.matte(halves(), model="tiny")).size == (300, 200)


async def test_unloadable_weights_are_engine_unavailable(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not an onnx model")
    with pytest.raises(EngineError) as caught:
        await engine_for(junk).matte(halves(), model="tiny")
    assert caught.value.code is FailCode.ENGINE_UNAVAILABLE


async def test_a_missing_input_name_is_engine_unavailable(mean_model: Path) -> None:
    spec = ModelSpec(name="odd", size=S, mean=HALF, std=ONE, output="minmax", input_name="img")
    with pytest.raises(EngineError, match="no input 'img'") as caught:
        await engine_for(mean_model, spec).matte(halves(), model="odd")
    assert caught.value.code is FailCode.ENGINE_UNAVAILABLE


async def test_an_inference_error_is_engine_failed(mean_model: Path) -> None:
    wrong_size = ModelSpec(name="wrong", size=16, mean=HALF, std=ONE, output="minmax")
    with pytest.raises(EngineError) as caught:
        await engine_for(mean_model, wrong_size).matte(halves(), model="wrong")
    assert caught.value.code is FailCode.ENGINE_FAILED


def test_postprocess_accepts_3d_output_and_refuses_1d() -> None:
    plane = np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 4, 4)
    matte = postprocess(plane, MEAN_SPEC, (8, 8))
    assert matte.size == (8, 8)
    assert np.asarray(matte).max() == 255
    with pytest.raises(EngineError):
        postprocess(np.zeros(4, dtype=np.float32), MEAN_SPEC, (8, 8))


def test_sigmoid_does_not_overflow_on_huge_logits() -> None:
    spec = ModelSpec(name="s", size=2, mean=HALF, std=ONE, output="sigmoid")
    logits = np.array([[[[-1e6, 1e6], [0.0, 3.0]]]], dtype=np.float32)
    assert list(np.asarray(postprocess(logits, spec, (2, 2))).ravel()) == [0, 255, 128, 243]


def test_intra_op_threads_must_be_positive(mean_model: Path) -> None:
    with pytest.raises(ValueError, match="intra_op_num_threads"):
        engine_for(mean_model, threads=0)


def test_spec_table_follows_the_design() -> None:
    isnet = MODEL_SPECS["isnet-medium"]
    assert (isnet.size, isnet.mean, isnet.std, isnet.output, isnet.input_name) == (
        1024,
        HALF,
        ONE,
        "minmax",
        "input",
    )
    assert MODEL_SPECS["isnet-small"].size == 1024
    birefnet = MODEL_SPECS["birefnet"]
    assert (birefnet.size, birefnet.mean, birefnet.output) == (1024, IMAGENET_MEAN, "sigmoid")
    assert (MODEL_SPECS["rmbg-1.4"].size, MODEL_SPECS["rmbg-1.4"].mean) == (1024, HALF)
    assert (MODEL_SPECS["u2net"].size, MODEL_SPECS["u2net"].std) == (320, IMAGENET_STD)


async def test_local_engine_uses_a_given_weights_path(tmp_path: Path) -> None:
    path = save_model(tmp_path / "u2net.onnx", [channel_mean()], size=320)
    asked: list[ModelSource] = []

    def offline(source: ModelSource, target: Path) -> str:
        asked.append(source)
        raise WeightsFetchError(f"offline: {target.name}")

    engine = local_engine(tmp_path / "cache", weights_paths={"u2net": path}, downloader=offline)
    matte = await engine.matte(halves((100, 60)), model="u2net")
    assert matte.size == (100, 60)
    assert np.asarray(matte)[:, :40].min() == 255
    assert asked == []
    with pytest.raises(WeightsFetchError, match=r"offline: birefnet\.onnx"):
        await engine.matte(halves(), model="birefnet")
    assert asked == [DEFAULT_SOURCES["birefnet"]]


async def test_model_sources_override_the_catalogue(tmp_path: Path) -> None:
    asked: list[ModelSource] = []

    def fetch(source: ModelSource, target: Path) -> str:
        asked.append(source)
        save_model(target, [channel_mean()], size=320)
        return hashlib.sha256(target.read_bytes()).hexdigest()

    mine = ModelSource("https://mirror.example/u2net.onnx", "ab" * 32)
    engine = local_engine(tmp_path, sources={"u2net": mine}, downloader=fetch)
    await engine.matte(halves((40, 30)), model="u2net")
    assert asked == [mine]


# --- the event loop stays free ------------------------------------------------------


async def ticks_during(work: asyncio.Future[object] | asyncio.Task[object]) -> tuple[float, float]:
    """(duration of `work`, longest gap between ticks of a 5 ms ticker meanwhile)."""
    stamps: list[float] = []
    stop = threading.Event()

    async def ticker() -> None:
        while not stop.is_set():
            stamps.append(time.perf_counter())
            await asyncio.sleep(0.005)

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    started = time.perf_counter()
    await work
    duration = time.perf_counter() - started
    stop.set()
    await ticking
    gaps = np.diff(stamps)
    return duration, float(gaps.max()) if len(gaps) else duration


async def test_loading_does_not_block_the_loop(mean_model: Path) -> None:
    def slow_locate(model: str) -> Path:
        time.sleep(0.4)  # a download, blocking
        return mean_model

    engine = OnnxEngine(slow_locate, specs={"tiny": MEAN_SPEC})
    duration, longest_gap = await ticks_during(
        asyncio.ensure_future(engine.matte(halves(), model="tiny"))
    )
    assert duration >= 0.4
    assert longest_gap < duration / 3


async def test_inference_does_not_block_the_loop(tmp_path: Path) -> None:
    """A model made slow on purpose (identity matmuls) must leave the loop ticking."""
    size = 384
    eye = numpy_helper.from_array(np.eye(size, dtype=np.float32), "eye")
    nodes, source = [], "input"
    for index in range(60):  # about 0.3 s on one thread here: long against a 5 ms tick
        nodes.append(helper.make_node("MatMul", [source, "eye"], [f"m{index}"]))
        source = f"m{index}"
    nodes.append(channel_mean(source))
    path = save_model(tmp_path / "slow.onnx", nodes, size=size, initializers=[eye])
    spec = ModelSpec(name="slow", size=size, mean=HALF, std=ONE, output="minmax")
    engine = engine_for(path, spec, threads=1)
    await engine.load("slow")
    duration, longest_gap = await ticks_during(
        asyncio.ensure_future(engine.matte(halves(), model="slow"))
    )
    assert duration > 0.05, "the model must be slow enough to show anything"
    assert longest_gap < duration / 3


BANDS = ((230, 20, 20), (20, 140, 20), (20, 20, 70))


def three_bands(width: int = 90, height: int = 40) -> Image.Image:
    """Red, green and blue vertical bands: per-channel normalisation tells them apart."""
    image = Image.new("RGB", (width, height))
    for index, colour in enumerate(BANDS):
        image.paste(colour, (index * width // 3, 0, (index + 1) * width // 3, height))
    return image


def expected_band_values(spec: ModelSpec) -> list[float]:
    """What the spec's pre- and post-processing make of each band through a channel mean."""
    means = [
        sum((v / 255 - m) / s for v, m, s in zip(colour, spec.mean, spec.std, strict=True)) / 3
        for colour in BANDS
    ]
    if spec.output == "sigmoid":
        return [255 / (1 + math.exp(-value)) for value in means]
    low, high = min(means), max(means)
    return [255 * (value - low) / (high - low) for value in means]


@pytest.mark.parametrize("name", sorted(MODEL_SPECS))
async def test_each_spec_end_to_end_on_a_tiny_model(tmp_path: Path, name: str) -> None:
    """Every known model's spec (input size and name, normalisation, output mapping,
    resize back) through a real ONNX Runtime session on a channel-mean model."""
    spec = MODEL_SPECS[name]
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", [spec.input_name or "x"], ["y"], axes=[1], keepdims=1)],
        "tiny",
        [helper.make_tensor_value_info(spec.input_name or "x", TensorProto.FLOAT,
                                       [1, 3, spec.size, spec.size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, spec.size, spec.size])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, path)
    engine = OnnxEngine(lambda _model: path, intra_op_num_threads=1)
    matte = np.asarray(await engine.matte(three_bands(), model=name), dtype=np.float64)
    assert matte.shape == (40, 90)
    centres = [matte[20, 15], matte[20, 45], matte[20, 75]]
    assert centres == pytest.approx(expected_band_values(spec), abs=1.5)


def test_execution_providers_prefer_cuda_and_honour_configuration() -> None:
    assert choose_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    both = ["CUDAExecutionProvider", "AzureExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(both) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(both, ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    with pytest.raises(EngineError, match="LOCAL_ENGINE_PROVIDERS") as caught:
        choose_providers(["CPUExecutionProvider"], ["CUDAExecutionProvider"])
    assert caught.value.code is FailCode.ENGINE_UNAVAILABLE
    assert "CPUExecutionProvider" in available_providers()
