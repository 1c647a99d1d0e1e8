"""What makes the local engine fast: threads per inference, a real warm-up, fp32 weights."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import MappingProxyType

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from lumiku_bgremover.engines import EngineError, weights
from lumiku_bgremover.engines import local as local_module
from lumiku_bgremover.engines.catalogue import catalogue
from lumiku_bgremover.engines.local import (
    MODEL_SPECS,
    ModelSpec,
    OnnxEngine,
    default_intra_op_threads,
)
from lumiku_bgremover.engines.weights import (
    DerivedWeights,
    NpmWeights,
    WeightsIntegrityError,
    resolve_weights,
)
from lumiku_bgremover.engines.widen import widen_file
from tests.unit.test_engines_local import MEAN_SPEC, S, channel_mean, save_model


@pytest.mark.parametrize(
    ("cores", "concurrency", "threads"),
    [(2, 2, 1), (2, 1, 2), (16, 2, 8), (16, 3, 5), (1, 4, 1), (4, 0, 4)],
)
def test_threads_share_the_cores_between_concurrent_items(
    cores: int, concurrency: int, threads: int
) -> None:
    assert default_intra_op_threads(cores, concurrency) == threads


@pytest.mark.parametrize(
    ("concurrency", "given", "threads"), [(2, None, 4), (1, None, 8), (2, 3, 3)]
)
def test_the_engine_sizes_its_sessions_by_concurrency(
    monkeypatch: pytest.MonkeyPatch, concurrency: int, given: int | None, threads: int
) -> None:
    monkeypatch.setattr(local_module, "usable_cores", lambda: 8)
    engine = OnnxEngine(Path, intra_op_num_threads=given, concurrency=concurrency)
    assert engine.intra_op_num_threads == threads


async def test_sessions_get_the_thread_count(tmp_path: Path) -> None:
    path = save_model(tmp_path / "mean.onnx", [channel_mean()])
    engine = OnnxEngine(lambda _m: path, specs={"tiny": MEAN_SPEC}, concurrency=64)
    await engine.load("tiny")
    session = engine._sessions["tiny"].session
    assert session.get_session_options().intra_op_num_threads == 1


async def test_load_runs_an_inference(tmp_path: Path) -> None:
    """A model that loads but cannot infer fails at start-up, not on the first image."""
    path = save_model(tmp_path / "mean.onnx", [channel_mean()])
    wrong_size = ModelSpec(name="tiny", size=S * 2, mean=(0.5,) * 3, std=(1.0,) * 3,
                           output="minmax", input_name="input")  # fmt: skip
    engine = OnnxEngine(lambda _m: path, specs={"tiny": wrong_size})
    with pytest.raises(EngineError, match="failed on this image"):
        await engine.load("tiny")
    ready = OnnxEngine(lambda _m: path, specs={"tiny": MEAN_SPEC})
    await ready.load("tiny")
    assert "tiny" in ready._sessions


def fp16_model(path: Path) -> Path:
    """input (fp32) -> Cast fp16 -> Mul by an fp16 weight -> Cast fp32 -> channel mean."""
    weight = numpy_helper.from_array(np.array([0.5], dtype=np.float16), "w")
    scale = helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(
        np.array([2.0], dtype=np.float16), "c"))  # fmt: skip
    nodes = [
        helper.make_node("Cast", ["input"], ["half"], to=TensorProto.FLOAT16),
        scale,
        helper.make_node("Mul", ["half", "w"], ["scaled"]),
        helper.make_node("Mul", ["scaled", "c"], ["doubled"]),
        helper.make_node("Cast", ["doubled"], ["wide"], to=TensorProto.FLOAT),
        channel_mean("wide"),
    ]
    return save_model(path, nodes, initializers=[weight])


def run(path: Path, pixels: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["output"], {"input": pixels})[0])


def test_widening_drops_the_casts_and_keeps_the_output(tmp_path: Path) -> None:
    source = fp16_model(tmp_path / "half.onnx")
    target, again = tmp_path / "wide.onnx", tmp_path / "again.onnx"
    widen_file(source, target)
    widen_file(source, again)
    model = onnx.load(target)
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node if n.op_type == "Cast"] == []
    assert {t.data_type for t in model.graph.initializer} == {TensorProto.FLOAT}
    pixels = np.random.default_rng(1).random((1, 3, S, S), dtype=np.float32)
    np.testing.assert_allclose(run(target, pixels), run(source, pixels), atol=1e-3)
    assert target.read_bytes() == again.read_bytes()  # deterministic: it can be pinned


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def derived_setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A cached, pinned fp16 base model and the pin of its fp32 copy."""
    cache = tmp_path / "cache"
    cache.mkdir()
    base = fp16_model(cache / "base.onnx")
    reference = tmp_path / "reference.onnx"
    widen_file(base, reference)
    pins = {"base": NpmWeights("/models/base", digest(base), base.stat().st_size)}
    monkeypatch.setattr(weights, "NPM_WEIGHTS", MappingProxyType(pins))
    derived = {"base-fp32": DerivedWeights("base", digest(reference), reference.stat().st_size)}
    monkeypatch.setattr(weights, "DERIVED_WEIGHTS", MappingProxyType(derived))
    return cache, reference


def never_pack(spec: str, folder: Path) -> Path:
    raise AssertionError(f"the base model is cached: nothing to fetch ({spec}, {folder})")


def test_a_derived_model_is_made_from_its_base_and_checked(
    derived_setup: tuple[Path, Path],
) -> None:
    cache, reference = derived_setup
    path = resolve_weights("base-fp32", cache, packer=never_pack)
    assert path == cache / "base-fp32.onnx"
    assert path.read_bytes() == reference.read_bytes()
    assert resolve_weights("base-fp32", cache, packer=never_pack) == path  # cached


def test_a_derived_model_off_its_pin_is_refused(
    derived_setup: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cache, reference = derived_setup
    wrong = {"base-fp32": DerivedWeights("base", "0" * 64, reference.stat().st_size)}
    monkeypatch.setattr(weights, "DERIVED_WEIGHTS", MappingProxyType(wrong))
    with pytest.raises(WeightsIntegrityError, match="not the pinned file"):
        resolve_weights("base-fp32", cache, packer=never_pack)
    assert sorted(p.name for p in cache.iterdir() if p.suffix == ".onnx") == ["base.onnx"]


def test_the_fp32_isnet_is_a_separate_derived_model() -> None:
    assert MODEL_SPECS["isnet-medium-fp32"].input_name == "input"
    entry = catalogue(["isnet-medium-fp32"])["isnet-medium-fp32"]
    assert (entry.source, entry.sha256) == ("derived", weights.DERIVED_WEIGHTS[entry.name].sha256)
    assert weights.DERIVED_WEIGHTS["isnet-medium-fp32"].base == "isnet-medium"
