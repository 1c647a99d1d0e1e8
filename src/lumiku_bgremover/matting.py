"""Edge quality for any engine's matte: pure functions over Pillow and numpy (no I/O).

- `estimate_foreground`: the colour of the subject alone at semi-transparent pixels.
  A pixel on the subject's edge is `alpha * F + (1 - alpha) * B`; keeping the photo's
  colour there keeps the old background (a green fringe on a white page). This is the
  blur-fusion estimate of Forte and Pitie, "Approximate Fast Foreground Colour
  Estimation" (ICIP 2021): two passes of box-blurred local means of foreground and
  background (radius 90, then 6), O(pixels), no solver.
- `to_srgb`: pixels converted from an embedded ICC profile to sRGB (results then carry
  no profile and look the same everywhere).
- `cap_size`: a result no larger than a given longest side (Lanczos).
"""

from __future__ import annotations

import io
from typing import Final

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageCms

__all__ = ["cap_size", "estimate_foreground", "has_soft_edges", "to_srgb"]

Array = npt.NDArray[np.float32]
#: Box radii of the two blur-fusion passes (the paper's values).
RADII: Final = (90, 6)
_EPS: Final = np.float32(1e-5)
_SRGB: Final = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def _box_blur(values: Array, radius: int) -> Array:
    """Mean over a (2r+1)^2 window, shrunk at the borders (any channels).

    Separable: the window's sum and its cell count are both products of a row and a
    column part, so the mean is a mean along rows of a mean along columns, each from a
    float64 running sum (one gather per axis instead of four 2-D gathers). Channels go
    one at a time, so the float64 temporaries are a single plane's.
    """
    if values.ndim == 2:  # noqa: PLR2004 - one plane
        return _box_mean(_box_mean(values, radius, 0), radius, 1).astype(np.float32)
    out = np.empty(values.shape, dtype=np.float32)
    for channel in range(values.shape[2]):
        out[..., channel] = _box_blur(values[..., channel], radius)
    return out


def _box_mean(values: npt.NDArray[np.floating], radius: int, axis: int) -> npt.NDArray[np.float64]:
    size = values.shape[axis]
    shape = list(values.shape)
    shape[axis] = size + 1
    sums = np.zeros(shape, dtype=np.float64)
    inner: list[slice] = [slice(None)] * values.ndim
    inner[axis] = slice(1, None)
    np.cumsum(values, axis=axis, dtype=np.float64, out=sums[tuple(inner)])
    positions = np.arange(size)
    low = np.clip(positions - radius, 0, size)
    high = np.clip(positions + radius + 1, 0, size)
    total = np.take(sums, high, axis=axis)
    total -= np.take(sums, low, axis=axis)
    del sums
    counts = [1] * values.ndim
    counts[axis] = size
    total /= (high - low).astype(np.float64).reshape(counts)
    return total


def _fusion_pass(
    image: Array, fore: Array, back: Array, alpha: Array, radius: int
) -> tuple[Array, Array]:
    """One blur-fusion pass; temporaries are reused in place (a 3-channel float32 plane
    of a 12 MP photo is 144 MB, so every avoided copy counts, twice per worker)."""
    a = alpha[..., np.newaxis]
    blurred_alpha = _box_blur(alpha, radius)[..., np.newaxis]
    blurred_fore = _box_blur(np.multiply(fore, a), radius)
    blurred_fore /= blurred_alpha + _EPS
    weighted_back = np.subtract(1, a, dtype=np.float32) * back
    blurred_back = _box_blur(weighted_back, radius)
    del weighted_back
    blurred_back /= (1 - blurred_alpha) + _EPS
    # estimate = F + a * (I - a * F - (1 - a) * B), built in one buffer
    estimate = np.multiply(a, blurred_fore)
    np.subtract(image, estimate, out=estimate)
    estimate -= (1 - a) * blurred_back
    estimate *= a
    estimate += blurred_fore
    del blurred_fore
    np.clip(estimate, 0, 1, out=estimate)
    return estimate, blurred_back


def estimate_foreground(image: Image.Image, alpha: Image.Image) -> Image.Image:
    """`image` (RGB) with its colours at 0 < alpha < 255 replaced by the subject's own.

    Pixels where alpha is 0 or 255 are returned unchanged (opaque ones exactly as
    they were; transparent ones do not matter).
    """
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / np.float32(255)
    a = np.asarray(alpha.convert("L"), dtype=np.float32) / np.float32(255)
    fore, back = rgb, rgb
    for radius in RADII:
        fore, back = _fusion_pass(rgb, fore, back, a, radius)
    soft = ((a > 0) & (a < 1))[..., np.newaxis]
    out = np.where(soft, fore, rgb)
    return Image.fromarray(np.clip(out * 255 + 0.5, 0, 255).astype(np.uint8), "RGB")


def has_soft_edges(alpha: Image.Image) -> bool:
    """Whether any pixel is semi-transparent (only then is an estimate worth making)."""
    histogram = alpha.convert("L").histogram()
    return sum(histogram[1:255]) > 0


def to_srgb(image: Image.Image, icc_profile: bytes | None) -> Image.Image:
    """`image` (RGB) converted from `icc_profile` to sRGB; unchanged without a usable one."""
    if not icc_profile:
        return image
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
        converted = ImageCms.profileToProfile(
            image, source, _SRGB, renderingIntent=ImageCms.Intent.PERCEPTUAL, outputMode="RGB"
        )
    except (ImageCms.PyCMSError, OSError, ValueError):
        return image
    return converted if converted is not None else image


def cap_size(image: Image.Image, max_side: int | None) -> Image.Image:
    """`image` scaled down (Lanczos, aspect kept) so its longest side is at most `max_side`."""
    if max_side is None or max(image.size) <= max_side:
        return image
    scale = max_side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)
