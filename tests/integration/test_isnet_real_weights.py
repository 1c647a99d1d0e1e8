"""IS-Net (medium, fp32) with its real weights on scikit-image's astronaut photo.

The weights are fetched with npm on first use and cached in MODEL_CACHE_DIR (default
~/.cache/lumiku-bgremover), so later runs only re-verify them. Without npm or the
registry this skips locally and fails in CI.

The photo (512 x 512): the astronaut in an orange suit fills the centre and the
bottom edge (her helmet sits in the bottom-right corner, her suit in the
bottom-left one), a US flag runs down the left edge, a grey backdrop and a shuttle
model fill the top right. So only the two top corners, the flag strip and the
backdrop are truly background; the bottom corners are subject.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from lumiku_bgremover.engines.local import OnnxEngine
from lumiku_bgremover.engines.weights import (
    DERIVED_WEIGHTS,
    NPM_WEIGHTS,
    WeightsFetchError,
    resolve_weights,
)
from lumiku_bgremover.settings import EngineSettings
from tests.fixtures._common import unavailable

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(900)]

log = logging.getLogger(__name__)

#: (top, bottom, left, right) pixel boxes of the 512 x 512 photo.
SUBJECT = {
    "centre": (160, 352, 160, 352),
    "face": (80, 180, 180, 280),
    "torso": (300, 450, 60, 260),
    "helmet, bottom-right corner": (448, 512, 448, 512),
}
BACKGROUND = {
    "top-left corner (flag)": (0, 64, 0, 64),
    "top-right corner (backdrop)": (0, 64, 448, 512),
    "flag strip, left edge": (40, 240, 0, 40),
    "backdrop, right edge": (100, 250, 460, 512),
}


@pytest.fixture(scope="module")
def isnet_medium() -> Path:
    raw = os.environ.get("MODEL_CACHE_DIR", "").strip()
    cache = Path(raw).expanduser() if raw else EngineSettings().model_cache_dir
    started = time.perf_counter()
    try:
        path = resolve_weights("isnet-medium", cache)
    except WeightsFetchError as error:
        unavailable(f"cannot fetch the IS-Net weights: {error}")
    log.info("IS-Net medium ready at %s in %.1f s", path, time.perf_counter() - started)
    return path


def astronaut() -> Image.Image:
    return Image.fromarray(data.astronaut())  # type: ignore[no-untyped-call]


def region_means(
    matte: Image.Image, boxes: dict[str, tuple[int, int, int, int]]
) -> dict[str, float]:
    pixels = np.asarray(matte, dtype=np.float32) / 255.0
    return {name: float(pixels[t:b, x0:x1].mean()) for name, (t, b, x0, x1) in boxes.items()}


def test_weights_are_the_pinned_file(isnet_medium: Path) -> None:
    assert isnet_medium.name == "isnet-medium.onnx"
    assert isnet_medium.stat().st_size == NPM_WEIGHTS["isnet-medium"].size


async def test_astronaut_is_kept_and_background_removed(isnet_medium: Path) -> None:
    engine = OnnxEngine(lambda _model: isnet_medium)
    await engine.load("isnet-medium")
    photo = astronaut()
    started = time.perf_counter()
    matte = await engine.matte(photo, model="isnet-medium")
    log.info("IS-Net medium inference: %.2f s", time.perf_counter() - started)
    assert matte.mode == "L"
    assert matte.size == photo.size == (512, 512)
    kept, removed = region_means(matte, SUBJECT), region_means(matte, BACKGROUND)
    log.info("subject means %s; background means %s", kept, removed)
    assert all(value > 0.7 for value in kept.values()), kept
    assert all(value < 0.2 for value in removed.values()), removed


async def test_a_non_square_crop_keeps_its_size(isnet_medium: Path) -> None:
    engine = OnnxEngine(lambda _model: isnet_medium)
    crop = astronaut().crop((0, 0, 512, 300))  # head and shoulders
    matte = await engine.matte(crop, model="isnet-medium")
    assert matte.size == (512, 300)
    means = region_means(matte, {"face": (80, 180, 180, 280), "flag": (0, 64, 0, 64)})
    assert means["face"] > 0.7
    assert means["flag"] < 0.2


def matte_agreement(first: Image.Image, second: Image.Image) -> tuple[float, float]:
    """(mean absolute alpha difference in [0, 1], IoU of alpha >= 0.5)."""
    a = np.asarray(first, dtype=np.float32) / 255.0
    b = np.asarray(second, dtype=np.float32) / 255.0
    union = float(((a >= 0.5) | (b >= 0.5)).sum())
    iou = float(((a >= 0.5) & (b >= 0.5)).sum()) / union if union else 1.0
    return float(np.abs(a - b).mean()), iou


async def test_the_fp32_copy_is_pinned_and_gives_the_same_mattes(isnet_medium: Path) -> None:
    wide = resolve_weights("isnet-medium-fp32", isnet_medium.parent)
    assert wide.stat().st_size == DERIVED_WEIGHTS["isnet-medium-fp32"].size
    paths = {"isnet-medium": isnet_medium, "isnet-medium-fp32": wide}
    engine = OnnxEngine(paths.__getitem__)
    photos = [astronaut(), astronaut().crop((0, 0, 512, 300))]
    for photo in photos:
        original = await engine.matte(photo, model="isnet-medium")
        widened = await engine.matte(photo, model="isnet-medium-fp32")
        difference, iou = matte_agreement(original, widened)
        assert difference <= 0.01, difference
        assert iou >= 0.99, iou
