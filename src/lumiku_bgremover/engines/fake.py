"""A deterministic engine with no weights, for tests, the demo's plumbing and benchmarks."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from typing import Final

from PIL import Image, ImageChops, ImageFilter, ImageStat

from lumiku_bgremover.contracts.codes import FailCode
from lumiku_bgremover.engines.base import EngineError

__all__ = ["FakeEngine", "border_colour", "fake_matte"]

#: Colour distance (0..255, largest channel) at or below which a pixel is background.
LOW: Final = 24
#: Colour distance at or above which a pixel is fully subject.
HIGH: Final = 72
_RAMP: Final = [
    0 if v <= LOW else 255 if v >= HIGH else (v - LOW) * 255 // (HIGH - LOW) for v in range(256)
]


def border_colour(image: Image.Image) -> tuple[int, int, int]:
    """The mean colour of the image's one-pixel border (taken as the background)."""
    w, h = image.size
    strips = [(0, 0, w, 1), (0, h - 1, w, h), (0, 0, 1, h), (w - 1, 0, w, h)]
    totals, count = [0.0, 0.0, 0.0], 0
    for box in strips:
        stat = ImageStat.Stat(image.crop(box))
        pixels = stat.count[0]
        totals = [t + s for t, s in zip(totals, stat.sum, strict=False)]
        count += pixels
    r, g, b = (round(t / count) for t in totals)
    return (r, g, b)


def fake_matte(image: Image.Image) -> Image.Image:
    """A plausible matte: how far each pixel's colour is from the border colour.

    Pixels close to the border colour become background (0), distant ones subject
    (255), with a linear ramp between and a light blur for soft edges. Pure and
    deterministic: the same image gives the same matte, byte for byte.
    """
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    backdrop = Image.new("RGB", rgb.size, border_colour(rgb))
    red, green, blue = ImageChops.difference(rgb, backdrop).split()
    distance = ImageChops.lighter(ImageChops.lighter(red, green), blue)
    return distance.point(_RAMP).filter(ImageFilter.BoxBlur(1))


def _unit_interval(seed: int, image: Image.Image) -> float:
    """A number in [0, 1) fixed by the seed and the image's pixels."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(seed.to_bytes(8, "big", signed=True))
    digest.update(f"{image.mode}:{image.width}x{image.height}:".encode())
    digest.update(image.tobytes())
    return int.from_bytes(digest.digest(), "big") / 2**64


class FakeEngine:
    """Deterministic matte (`fake_matte`), an optional delay and deterministic failures.

    Whether an image fails is decided by a hash of `(seed, image pixels)` compared
    with `failure_rate`, so a test sees the same images fail on every run; failures
    raise `EngineError(engine_failed, retryable=retryable)`. `sleep` is injected so
    tests of the delay need not wait. Every model name is accepted.
    """

    name = "fake"

    def __init__(
        self,
        *,
        delay_s: float = 0.0,
        failure_rate: float = 0.0,
        seed: int = 0,
        retryable: bool = True,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if delay_s < 0:
            raise ValueError(f"delay_s must be >= 0, got {delay_s}")
        if not 0.0 <= failure_rate <= 1.0:
            raise ValueError(f"failure_rate must be within [0, 1], got {failure_rate}")
        self.delay_s = delay_s
        self.failure_rate = failure_rate
        self.seed = seed
        self.retryable = retryable
        self._sleep = sleep

    def fails(self, image: Image.Image) -> bool:
        """Whether `matte` raises for this image (deterministic)."""
        return _unit_interval(self.seed, image) < self.failure_rate

    async def matte(self, image: Image.Image, *, model: str) -> Image.Image:
        """The fake matte of `image`, after the configured delay; `model` is ignored."""
        del model
        if self.delay_s > 0:
            await self._sleep(self.delay_s)
        return await asyncio.to_thread(self._compute, image)

    def _compute(self, image: Image.Image) -> Image.Image:
        if self.failure_rate > 0 and self.fails(image):
            raise EngineError(
                "fake engine: simulated failure",
                code=FailCode.ENGINE_FAILED,
                retryable=self.retryable,
            )
        return fake_matte(image)
