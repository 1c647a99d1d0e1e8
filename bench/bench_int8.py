"""Static int8 IS-Net (QDQ, per-channel, calibrated on real photos) against the fp32 copy.

An experiment, not a shipped model: it quantises `isnet-medium-fp32` from the model
cache with ONNX Runtime's `quantize_static` (MinMax calibration on six scikit-image
photos), then times one 1024 x 1024 inference of each model, interleaved (median of
five), and compares their mattes on four photos: mean absolute alpha difference (%)
and IoU of alpha >= 0.5, the goals of issue 12's B1. Variants: `u8` (every op the
quantiser knows, uint8 activations) and `u8x` (Conv only, the first conv and the
decoder's last stage left in fp32). Writes `bench/latest-int8.json`.

    .venv/bin/python bench/bench_int8.py [u8] [u8x]
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from PIL import Image
from skimage import data

from lumiku_bgremover.engines.local import MODEL_SPECS, postprocess, preprocess

SPEC = MODEL_SPECS["isnet-medium-fp32"]
FP32 = Path(os.environ.get("MODEL_CACHE_DIR", Path.home() / ".cache/lumiku-bgremover"))
CALIBRATION = ("astronaut", "coffee", "chelsea", "rocket", "cat", "hubble_deep_field")
COMPARED = ("astronaut", "coffee", "chelsea", "rocket")
LATEST = Path(__file__).with_name("latest-int8.json")


def photo(name: str) -> Image.Image:
    pixels = getattr(data, name)()
    if pixels.ndim == 2:
        pixels = np.stack([pixels] * 3, -1)
    return Image.fromarray(pixels[..., :3]).convert("RGB")


class Photos(CalibrationDataReader):  # type: ignore[misc]
    def __init__(self) -> None:
        self._inputs = iter([{"input": preprocess(photo(n), SPEC)} for n in CALIBRATION])

    def get_next(self) -> dict[str, Any] | None:
        return next(self._inputs, None)


def decoder_tail(model: Path) -> list[str]:
    graph = onnx.load(str(model), load_external_data=False).graph
    return [
        n.name
        for n in graph.node
        if n.name in ("/conv_in/Conv", "/side1/Conv") or n.name.startswith("/stage1d/")
    ]


def quantised(work: Path, variant: str) -> Path:
    pre, target = work / "pre.onnx", work / f"int8-{variant}.onnx"
    if not pre.exists():
        quant_pre_process(str(FP32 / "isnet-medium-fp32.onnx"), str(pre), skip_symbolic_shape=True)
    narrow = {"nodes_to_exclude": decoder_tail(pre), "op_types_to_quantize": ["Conv"]}
    quantize_static(
        str(pre), str(target), Photos(), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax, **(narrow if variant == "u8x" else {}),
    )  # fmt: skip
    return target


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def mattes(model: ort.InferenceSession) -> dict[str, np.ndarray[Any, Any]]:
    out = {}
    for name in COMPARED:
        image = photo(name)
        raw = model.run(None, {"input": preprocess(image, SPEC)})[0]
        out[name] = np.asarray(postprocess(raw, SPEC, image.size), dtype=np.float32) / 255
    return out


def seconds(models: dict[str, ort.InferenceSession], rounds: int = 5) -> dict[str, float]:
    x = preprocess(photo("astronaut"), SPEC)
    times: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(rounds):
        for key, model in models.items():
            started = time.perf_counter()
            model.run(None, {"input": x})
            times[key].append(time.perf_counter() - started)
    return {k: statistics.median(v) for k, v in times.items()}


def compare(ref: dict[str, Any], got: dict[str, Any]) -> dict[str, dict[str, float]]:
    def iou(a: Any, b: Any) -> float:
        return float(((a >= 0.5) & (b >= 0.5)).sum() / max(1, ((a >= 0.5) | (b >= 0.5)).sum()))

    return {
        "mean_abs_diff_pct": {n: float(np.abs(got[n] - ref[n]).mean() * 100) for n in COMPARED},
        "iou": {n: iou(got[n], ref[n]) for n in COMPARED},
    }


def main(variants: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as work:
        paths = {"fp32": FP32 / "isnet-medium-fp32.onnx"}
        paths |= {v: quantised(Path(work), v) for v in variants}
        models = {k: session(p) for k, p in paths.items()}
        for model in models.values():  # warm up
            model.run(None, {"input": preprocess(photo("coffee"), SPEC)})
        result: dict[str, Any] = {"load_start": list(os.getloadavg())}
        reference = mattes(models["fp32"])
        for variant in variants:
            result[variant] = compare(reference, mattes(models[variant]))
            result[variant]["size_mb"] = paths[variant].stat().st_size / 1e6
        result["seconds_per_inference"] = seconds(models)
        result["load_end"] = list(os.getloadavg())
        return result


if __name__ == "__main__":
    report = main(sys.argv[1:] or ["u8", "u8x"])
    LATEST.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
