"""Decode, validate and compose images: pure functions over Pillow (no I/O, no asyncio).

The pipeline calls `decode` and `compose` in a worker thread. Decisions worth knowing:

- Formats: `contracts.common.INPUT_FORMATS` (PNG, JPEG with MPO read as JPEG, WebP),
  the list the contract states. Bytes that Pillow (or a small sniff table: PDF,
  SVG/XML, ISO-BMFF such as HEIC/AVIF) recognises as anything else (GIF, BMP,
  TIFF, ...) are `unsupported_format`; bytes nobody recognises, and recognised
  images that fail to decode (truncated, corrupt), are `decode_failed`.
- Pixel limit: `width * height` is checked from the header, after `Image.open` and
  before `load()`, so no pixel buffer is ever allocated for an image over the limit.
  Pillow's own decompression-bomb guard (`Image.MAX_IMAGE_PIXELS`, left untouched)
  fires inside `Image.open`; its error, and its warning where warnings are errors,
  are also `too_many_pixels`. So the effective ceiling is the smaller of
  `max_pixels` and Pillow's (about 89.5 M pixels, 179 M for the hard error).
- The engine gets RGB. Sources with transparency are flattened on white for the
  engine and their own alpha is kept (`Decoded.alpha`): the result's alpha is the
  matte multiplied by it, so pixels that were transparent stay transparent.
  16-bit images are scaled (not clipped) to 8 bits. EXIF orientation is applied; an
  unreadable EXIF block is ignored. Metadata is not copied into results (no EXIF,
  no GPS). An RGB source's ICC profile is applied: pixels are converted to sRGB and
  results carry no profile (a profile LittleCMS cannot read is carried as it was).
- Edges: colour results take the subject's own colour at semi-transparent pixels
  (`matting.estimate_foreground`), so no fringe of the old background shows on a
  new one. `max_side` caps the result's longest side.
- Output: PNG (RGBA, alpha = matte); WebP lossy at quality 90 with a lossless alpha
  plane (alpha values exact, colour much smaller than lossless); JPEG at quality 92
  on `options.effective_background`. A background colour with PNG/WebP gives an
  opaque RGB result. `mask_only` gives the matte itself: a single-channel PNG or
  JPEG, or a lossless (greyscale) WebP. The matte is resized (bilinear) to the image
  when its size differs.
- `crop_to_subject`: the box of alpha > `SUBJECT_THRESHOLD`, grown by `crop_margin`
  and clamped to the image. An empty matte keeps the whole image (there is no
  subject to crop to, and an empty or 1x1 result would help nobody).
- Output bytes are deterministic for the same inputs.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, ParamSpec, TypeVar

from PIL import Image, ImageChops, ImageColor, ImageOps, UnidentifiedImageError

from lumiku_bgremover import matting
from lumiku_bgremover.contracts.codes import FAIL_CODE_HELP, FailCode
from lumiku_bgremover.contracts.common import INPUT_FORMATS, OutputFormat, OutputOptions

__all__ = [
    "ALLOWED_FORMATS",
    "SUBJECT_THRESHOLD",
    "Decoded",
    "Encoded",
    "ImageError",
    "compose",
    "decode",
]

#: Pillow format names `decode` opens (Pillow's JPEG opener also gives MPO, reported as JPEG).
ALLOWED_FORMATS: Final = tuple(pillow for pillow, _ in INPUT_FORMATS)
#: A matte value above this counts as subject when cropping (about 3 %).
SUBJECT_THRESHOLD: Final = 8
#: Lossy WebP quality (the alpha plane is always lossless).
WEBP_QUALITY: Final = 90
#: JPEG quality of results and masks.
JPEG_QUALITY: Final = 92
#: zlib level of PNG results. Measured on a 12 MP RGBA photo-like image: level 6 took
#: 3.5 s (7.4 MB), 3 took 1.5 s (8.4 MB), 1 took 0.7 s (9.7 MB); 3 is the middle ground.
PNG_COMPRESS_LEVEL: Final = 3

_WHITE: Final = (255, 255, 255)
_SIXTEEN_BIT: Final = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})
_ALPHA_MODES: Final = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
#: Errors Pillow raises for bytes it cannot decode (besides `UnidentifiedImageError`).
_DECODE_ERRORS: Final = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error)
_P = ParamSpec("_P")
_T = TypeVar("_T")
_CONTENT: Final = {
    OutputFormat.PNG: ("image/png", "png"),
    OutputFormat.WEBP: ("image/webp", "webp"),
    OutputFormat.JPEG: ("image/jpeg", "jpg"),
}


class ImageError(Exception):
    """An image cannot be used; `code` is the item's `FailCode`."""

    def __init__(self, code: FailCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True, eq=False)
class Decoded:
    """A decoded source: RGB pixels for the engine, upright (EXIF orientation applied)."""

    image: Image.Image  #: mode "RGB"
    format: str  #: a Pillow name of `INPUT_FORMATS` ("PNG", "JPEG" or "WEBP")
    alpha: Image.Image | None = None  #: the source's own alpha (mode "L"), if any
    icc_profile: bytes | None = None  #: the source's ICC profile, kept for RGB sources

    @property
    def width(self) -> int:
        """Width in pixels, after EXIF orientation."""
        return self.image.width

    @property
    def height(self) -> int:
        """Height in pixels, after EXIF orientation."""
        return self.image.height


@dataclass(frozen=True, slots=True)
class Encoded:
    """An encoded result, ready to store."""

    data: bytes
    content_type: str
    extension: str  #: without the dot: "png", "webp" or "jpg"
    width: int
    height: int


def decode(data: bytes, *, max_pixels: int) -> Decoded:
    """Decode `data` into an upright RGB image, refusing what the service cannot use.

    Raises `ImageError` with `unsupported_format`, `decode_failed` or `too_many_pixels`.
    Animated images give their first frame.
    """
    with _open(data) as source:
        _check_pixels(source.size, max_pixels)
        fmt = "JPEG" if source.format == "MPO" else str(source.format)
        icc = source.info.get("icc_profile") if source.mode in {"RGB", "RGBA"} else None
        upright = _load_upright(source)
    rgb, alpha = _guarded(_split_alpha, upright)
    srgb = matting.to_srgb(rgb, icc)
    if srgb is not rgb:
        rgb, icc = srgb, None  # converted: results are plain sRGB
    rgb.info = {}
    return Decoded(image=rgb, format=fmt, alpha=alpha, icc_profile=icc or None)


def compose(
    decoded: Decoded,
    matte: Image.Image,
    options: OutputOptions,
    *,
    edge_colour: bool = True,
    max_side: int | None = None,
) -> Encoded:
    """Render `decoded` with `matte` (mode "L", any size) as `options` ask, and encode it.

    `edge_colour` replaces the colour of semi-transparent pixels by the subject's own
    (`matting.estimate_foreground`: no fringe of the old background); `max_side` caps
    the result's longest side (None: no cap).
    """
    alpha = _alpha(decoded, matte)
    box = _crop_box(alpha, options.crop_margin) if options.crop_to_subject else None
    if options.mask_only:
        out, icc = alpha, None
    else:
        colour = decoded.image
        if edge_colour and matting.has_soft_edges(alpha):
            colour = matting.estimate_foreground(decoded.image, alpha)
        out, icc = _render(colour, alpha, options.effective_background), decoded.icc_profile
    if box is not None:
        out = out.crop(box)
    out = matting.cap_size(out, max_side)
    out.info = {}
    content_type, extension = _CONTENT[options.format]
    data = _encode(out, options.format, icc=icc, mask=options.mask_only)
    return Encoded(data, content_type, extension, out.width, out.height)


# --- decoding -------------------------------------------------------------------------


def _open(data: bytes) -> Image.Image:
    """`Image.open` restricted to the allowed formats (reads the header only)."""
    Image.init()  # registers every plugin once; `formats=` alone does not load them
    try:
        return Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(FailCode.TOO_MANY_PIXELS, f"image is too large: {exc}") from None
    except UnidentifiedImageError:
        code = _unidentified_code(data)
        raise ImageError(code, _UNIDENTIFIED[code]) from None
    except _DECODE_ERRORS as exc:
        raise ImageError(FailCode.DECODE_FAILED, f"unreadable image header: {exc}") from None


_UNIDENTIFIED: Final = {
    FailCode.UNSUPPORTED_FORMAT: FAIL_CODE_HELP[FailCode.UNSUPPORTED_FORMAT],
    FailCode.DECODE_FAILED: "the bytes are not a readable image",
}
#: Signatures of common non-raster or unsupported formats Pillow does not open.
_FOREIGN_PREFIXES: Final = (b"%PDF-", b"<?xml", b"<svg", b"<!DOCTYPE svg", b"\x00\x00\x00\x0cjP")


def _unidentified_code(data: bytes) -> FailCode:
    """`unsupported_format` for a recognisable other format, else `decode_failed`."""
    head = data[:64].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(_FOREIGN_PREFIXES) or data[4:8] == b"ftyp":
        return FailCode.UNSUPPORTED_FORMAT
    try:
        with Image.open(io.BytesIO(data)):
            return FailCode.UNSUPPORTED_FORMAT
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return FailCode.UNSUPPORTED_FORMAT
    except (UnidentifiedImageError, *_DECODE_ERRORS):
        return FailCode.DECODE_FAILED


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageError(FailCode.DECODE_FAILED, f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageError(
            FailCode.TOO_MANY_PIXELS,
            f"image has {width}x{height} = {width * height} pixels, over {max_pixels}",
        )


def _load_upright(source: Image.Image) -> Image.Image:
    """Decode the first frame's pixels and apply EXIF orientation."""
    _guarded(source.load)
    try:
        upright = ImageOps.exif_transpose(source)
    except (*_DECODE_ERRORS, KeyError, TypeError):
        upright = None  # an unreadable EXIF block: keep the pixels as stored
    return upright if upright is not None else source.copy()


def _guarded(func: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """Run a Pillow call, turning its decoding errors into `decode_failed`."""
    try:
        return func(*args, **kwargs)
    except _DECODE_ERRORS as exc:
        raise ImageError(FailCode.DECODE_FAILED, f"cannot decode image: {exc}") from None


def _split_alpha(image: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """RGB for the engine (transparency flattened on white) and the alpha, if any."""
    image = _to_eight_bit(image)
    if not _has_alpha(image):
        return image.convert("RGB"), None
    rgba = image.convert("RGBA")
    alpha = rgba.getchannel("A")
    if alpha.getextrema() == (255, 255):
        return rgba.convert("RGB"), None
    flat = Image.new("RGB", rgba.size, _WHITE)
    flat.paste(rgba.convert("RGB"), mask=alpha)
    return flat, alpha


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in _ALPHA_MODES or "transparency" in image.info


def _to_eight_bit(image: Image.Image) -> Image.Image:
    """16- and 32-bit integer greyscale scaled to 8 bits ("I" only when it exceeds 255)."""
    if image.mode in _SIXTEEN_BIT or (image.mode == "I" and _max_value(image) > 255):  # noqa: PLR2004
        return image.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    if image.mode in {"I", "F"}:
        return image.convert("L")
    return image


def _max_value(image: Image.Image) -> float:
    extrema = image.getextrema()
    high = extrema[1]
    return float(high) if isinstance(high, int | float) else 0.0


# --- composing ------------------------------------------------------------------------


def _alpha(decoded: Decoded, matte: Image.Image) -> Image.Image:
    """The result's alpha: the matte at the image's size, times the source's alpha."""
    alpha = matte.convert("L")  # a copy even in mode L: the caller's matte is never touched
    if alpha.size != decoded.image.size:
        alpha = alpha.resize(decoded.image.size, Image.Resampling.BILINEAR)
    if decoded.alpha is not None:
        alpha = ImageChops.multiply(alpha, decoded.alpha)
    return alpha


_SUBJECT_LUT: Final = [0] * (SUBJECT_THRESHOLD + 1) + [255] * (255 - SUBJECT_THRESHOLD)


def _crop_box(alpha: Image.Image, margin: int) -> tuple[int, int, int, int] | None:
    """The subject's bounding box grown by `margin`, clamped; None when there is none."""
    box = alpha.point(_SUBJECT_LUT).getbbox()
    if box is None:
        return None
    left, top, right, bottom = box
    return (
        max(0, left - margin),
        max(0, top - margin),
        min(alpha.width, right + margin),
        min(alpha.height, bottom + margin),
    )


def _render(rgb: Image.Image, alpha: Image.Image, background: str | None) -> Image.Image:
    """Opaque RGB on `background`, or RGBA with `alpha` when there is no background."""
    if background is None:
        out = rgb.convert("RGBA")
        out.putalpha(alpha)
        return out
    canvas = Image.new("RGB", rgb.size, ImageColor.getrgb(background))
    canvas.paste(rgb, mask=alpha)
    return canvas


def _encode(image: Image.Image, fmt: OutputFormat, *, icc: bytes | None, mask: bool) -> bytes:
    params: dict[str, object] = {"icc_profile": icc} if icc else {}
    if fmt is OutputFormat.PNG:
        params["compress_level"] = PNG_COMPRESS_LEVEL
    elif fmt is OutputFormat.WEBP:
        params |= {"lossless": True} if mask else {"quality": WEBP_QUALITY, "alpha_quality": 100}
        params["method"] = 4
    else:
        if image.mode == "RGBA":  # unreachable through OutputOptions: JPEG always has a background
            image = _render(image.convert("RGB"), image.getchannel("A"), "#FFFFFF")
        params["quality"] = JPEG_QUALITY
    buffer = io.BytesIO()
    image.save(buffer, fmt.value.upper(), **params)
    return buffer.getvalue()
