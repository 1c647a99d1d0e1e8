"""Table tests of the pure image work: decoding every input shape, composing every output."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib
from collections.abc import Callable

import pytest
from PIL import Image, ImageCms, ImageDraw

from lumiku_bgremover.contracts.codes import FAIL_CODE_HELP, FailCode
from lumiku_bgremover.contracts.common import (
    INPUT_FORMATS,
    INPUT_FORMATS_TEXT,
    OutputFormat,
    OutputOptions,
)
from lumiku_bgremover.imaging import (
    ALLOWED_FORMATS,
    SUBJECT_THRESHOLD,
    Decoded,
    ImageError,
    compose,
    decode,
)
from tests.fixtures.icc import linear_srgb_profile, to_srgb_level

MAX = 1_000_000
ORIENTATION = 0x0112


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def reopen(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def near(got: tuple[int, ...], want: tuple[int, ...], tolerance: int = 6) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(got, want, strict=True))


def rgb_at(image: Image.Image, xy: tuple[int, int]) -> tuple[int, int, int]:
    pixel = image.convert("RGB").getpixel(xy)
    assert isinstance(pixel, tuple)
    return (int(pixel[0]), int(pixel[1]), int(pixel[2]))


# --- decoding: colour modes -------------------------------------------------------------


def _palette_with_transparency() -> bytes:
    image = Image.new("P", (30, 20), 1)
    image.putpalette([0, 0, 0, 200, 30, 40] + [0] * 762)
    image.putpixel((0, 0), 0)
    return encode(image, "PNG", transparency=0)


def _gif_with_transparency() -> bytes:
    image = Image.new("P", (30, 20), 1)
    image.putpalette([0, 0, 0, 200, 30, 40] + [0] * 762)
    image.putpixel((0, 0), 0)
    return encode(image, "GIF", transparency=0)


def _sixteen_bit() -> bytes:
    image = Image.new("I;16", (30, 20), 0xC8C8)  # 51400: 200 in 8 bits, clipped would be 255
    return encode(image, "PNG")


def _la() -> bytes:
    image = Image.new("LA", (30, 20), (200, 255))
    image.putpixel((0, 0), (200, 0))
    return encode(image, "PNG")


def _rgba() -> bytes:
    image = Image.new("RGBA", (30, 20), (200, 30, 40, 255))
    image.putpixel((0, 0), (9, 9, 9, 0))
    return encode(image, "PNG")


def _one_bit() -> bytes:
    image = Image.new("1", (30, 20), 1)
    image.putpixel((0, 0), 0)
    return encode(image, "PNG")


# (id, bytes builder, format, colour away from (0, 0), whether (0, 0) is transparent)
MODES: list[tuple[str, Callable[[], bytes], str, tuple[int, int, int], bool]] = [
    ("rgb-jpeg", lambda: encode(Image.new("RGB", (30, 20), (200, 30, 40)), "JPEG"), "JPEG",
     (200, 30, 40), False),
    ("rgb-png", lambda: encode(Image.new("RGB", (30, 20), (200, 30, 40)), "PNG"), "PNG",
     (200, 30, 40), False),
    ("rgba-png", _rgba, "PNG", (200, 30, 40), True),
    ("l-png", lambda: encode(Image.new("L", (30, 20), 120), "PNG"), "PNG", (120, 120, 120), False),
    ("la-png", _la, "PNG", (200, 200, 200), True),
    ("p-transparent-png", _palette_with_transparency, "PNG", (200, 30, 40), True),
    ("cmyk-jpeg", lambda: encode(Image.new("CMYK", (30, 20), (0, 255, 255, 0)), "JPEG"),
     "JPEG", (255, 0, 0), False),
    ("i16-png", _sixteen_bit, "PNG", (200, 200, 200), False),
    ("1-bit-png", _one_bit, "PNG", (255, 255, 255), False),
    ("rgba-webp", lambda: encode(Image.new("RGBA", (30, 20), (200, 30, 40, 255)), "WEBP",
     lossless=True), "WEBP", (200, 30, 40), False),
    ("mpo", lambda: encode(Image.new("RGB", (30, 20), (200, 30, 40)), "MPO"), "JPEG",
     (200, 30, 40), False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("build", "fmt", "colour", "transparent_corner"),
    [pytest.param(*row[1:], id=row[0]) for row in MODES],
)
def test_every_mode_decodes_to_rgb(
    build: Callable[[], bytes], fmt: str, colour: tuple[int, int, int], transparent_corner: bool
) -> None:
    decoded = decode(build(), max_pixels=MAX)
    assert decoded.image.mode == "RGB"
    assert (decoded.width, decoded.height) == (30, 20) == decoded.image.size
    assert decoded.format == fmt
    assert near(rgb_at(decoded.image, (15, 10)), colour)
    if transparent_corner:
        assert decoded.alpha is not None
        assert decoded.alpha.getpixel((0, 0)) == 0
        assert decoded.alpha.getpixel((15, 10)) == 255
        assert rgb_at(decoded.image, (0, 0)) == (255, 255, 255)  # flattened on white
    else:
        assert decoded.alpha is None


def test_opaque_alpha_channel_is_dropped() -> None:
    decoded = decode(encode(Image.new("RGBA", (8, 8), (1, 2, 3, 255)), "PNG"), max_pixels=MAX)
    assert decoded.alpha is None
    assert rgb_at(decoded.image, (4, 4)) == (1, 2, 3)


def _exif_jpeg(orientation: int) -> bytes:
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 10, 10))  # a red block in the stored top-left corner
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    return encode(image, "JPEG", exif=exif.tobytes(), quality=95)


@pytest.mark.parametrize(
    ("orientation", "size", "red_at"),
    [
        (1, (40, 20), (2, 2)),
        (6, (20, 40), (17, 2)),
        (8, (20, 40), (2, 37)),
        (3, (40, 20), (37, 17)),
    ],
)
def test_exif_orientation_is_applied(
    orientation: int, size: tuple[int, int], red_at: tuple[int, int]
) -> None:
    decoded = decode(_exif_jpeg(orientation), max_pixels=MAX)
    assert (decoded.width, decoded.height) == size
    assert near(rgb_at(decoded.image, red_at), (255, 0, 0), 30)
    assert ORIENTATION not in decoded.image.getexif()


#: Formats Pillow reads that the contract does not accept (INPUT_FORMATS is PNG, JPEG, WebP).
FOREIGN_RASTERS = [
    ("transparent-gif", _gif_with_transparency),
    ("animated-gif", lambda: encode(Image.new("RGB", (16, 12)), "GIF", save_all=True,
                                    append_images=[Image.new("RGB", (16, 12), (0, 255, 0))])),
    ("1-bit-bmp", lambda: encode(Image.new("1", (30, 20), 1), "BMP")),
    ("rgb-bmp", lambda: encode(Image.new("RGB", (30, 20), (200, 30, 40)), "BMP")),
    ("rgb-tiff", lambda: encode(Image.new("RGB", (30, 20), (200, 30, 40)), "TIFF")),
]  # fmt: skip


@pytest.mark.parametrize(
    "build", [b for _, b in FOREIGN_RASTERS], ids=[n for n, _ in FOREIGN_RASTERS]
)
def test_readable_formats_outside_the_contract_are_unsupported(build) -> None:
    with pytest.raises(ImageError) as caught:
        decode(build(), max_pixels=MAX)
    assert caught.value.code is FailCode.UNSUPPORTED_FORMAT
    assert caught.value.message == "not a PNG, JPEG or WebP image"


def test_the_decoded_formats_are_the_contracts_list() -> None:
    assert (
        ALLOWED_FORMATS == tuple(pillow for pillow, _ in INPUT_FORMATS) == ("PNG", "JPEG", "WEBP")
    )
    assert FAIL_CODE_HELP[FailCode.UNSUPPORTED_FORMAT] == f"not a {INPUT_FORMATS_TEXT} image"


def test_animated_webp_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (16, 12), colour) for colour in [(0, 0, 255), (0, 255, 0)]]
    data = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    decoded = decode(data, max_pixels=MAX)
    assert near(rgb_at(decoded.image, (8, 6)), (0, 0, 255))


# --- decoding: refusals -----------------------------------------------------------------


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims `width x height` followed by a tiny, useless IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )


def jpeg_header_claiming(width: int, height: int) -> bytes:
    """A real small JPEG with its SOF0 dimensions rewritten."""
    data = bytearray(encode(Image.new("RGB", (16, 16), (9, 9, 9)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@pytest.mark.parametrize(
    ("data", "max_pixels"),
    [
        pytest.param(png_header_claiming(100_000, 100_000), 50_000_000, id="png-10G-pillow-error"),
        pytest.param(png_header_claiming(12_000, 12_000), 200_000_000, id="png-144M-pillow-warn"),
        pytest.param(png_header_claiming(9_000, 9_000), 50_000_000, id="png-81M-our-limit"),
        pytest.param(png_header_claiming(1_001, 1_000), 1_000_000, id="png-one-row-over"),
        pytest.param(jpeg_header_claiming(65_000, 65_000), 50_000_000, id="jpeg-4G"),
        pytest.param(jpeg_header_claiming(8_000, 8_000), 50_000_000, id="jpeg-64M"),
    ],
)
def test_too_many_pixels_is_refused_from_the_header(data: bytes, max_pixels: int) -> None:
    # The bodies are broken: decoding pixels first would give decode_failed instead.
    with pytest.raises(ImageError) as caught:
        decode(data, max_pixels=max_pixels)
    assert caught.value.code is FailCode.TOO_MANY_PIXELS


def test_at_the_pixel_limit_is_accepted() -> None:
    data = encode(Image.new("RGB", (1000, 1000), (5, 5, 5)), "PNG")
    assert decode(data, max_pixels=1_000_000).image.size == (1000, 1000)
    with pytest.raises(ImageError) as caught:
        decode(data, max_pixels=999_999)
    assert caught.value.code is FailCode.TOO_MANY_PIXELS


def _zero_png(side: int) -> bytes:
    """A real, valid greyscale PNG of side x side zeros (a few KB compressed)."""
    packer = zlib.compressobj(9)
    row = b"\0" * (side + 1)  # filter byte + pixels
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )


def test_a_real_bomb_is_refused_without_decoding_its_pixels() -> None:
    bomb = _zero_png(4000)  # 16 M pixels: 16 MB as L, 48 MB as RGB, in a few KB
    assert len(bomb) < 100_000
    assert decode(bomb, max_pixels=20_000_000).image.size == (4000, 4000)  # a real image

    tracemalloc.start()
    with pytest.raises(ImageError) as caught:
        decode(bomb, max_pixels=1_000_000)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert caught.value.code is FailCode.TOO_MANY_PIXELS
    assert peak < 2 * 1024 * 1024, peak  # no pixel buffer (16 MB) was ever allocated


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _noise(fmt: str) -> bytes:
    return encode(Image.effect_noise((64, 48), 50).convert("RGB"), fmt)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        pytest.param(b"", FailCode.DECODE_FAILED, id="empty"),
        pytest.param(b"hello, world\n" * 20, FailCode.DECODE_FAILED, id="text"),
        pytest.param(bytes(range(256)) * 8, FailCode.DECODE_FAILED, id="binary-noise"),
        pytest.param(_truncated(_noise("JPEG")), FailCode.DECODE_FAILED, id="truncated-jpeg"),
        pytest.param(_truncated(_noise("PNG")), FailCode.DECODE_FAILED, id="truncated-png"),
        pytest.param(_noise("JPEG")[:20], FailCode.DECODE_FAILED, id="jpeg-magic-only"),
        pytest.param(b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\n", FailCode.UNSUPPORTED_FORMAT, id="pdf"),
        pytest.param(
            b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>',
            FailCode.UNSUPPORTED_FORMAT,
            id="svg",
        ),
        pytest.param(
            b'\xef\xbb\xbf  <?xml version="1.0"?>\n<svg/>', FailCode.UNSUPPORTED_FORMAT, id="xml"
        ),
        pytest.param(
            b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic",
            FailCode.UNSUPPORTED_FORMAT,
            id="heic",
        ),
        pytest.param(_noise("ICO"), FailCode.UNSUPPORTED_FORMAT, id="ico"),
        pytest.param(_noise("PPM"), FailCode.UNSUPPORTED_FORMAT, id="ppm"),
        pytest.param(_noise("TGA"), FailCode.UNSUPPORTED_FORMAT, id="tga"),
        pytest.param(png_header_claiming(0, 10), FailCode.DECODE_FAILED, id="png-zero-width"),
    ],
)
def test_non_images_are_refused(data: bytes, code: FailCode) -> None:
    with pytest.raises(ImageError) as caught:
        decode(data, max_pixels=MAX)
    assert caught.value.code is code
    assert str(caught.value) == caught.value.message


# --- composing --------------------------------------------------------------------------

W, H = 100, 80
SOURCE_COLOUR = (30, 120, 220)


def source(colour: tuple[int, int, int] = SOURCE_COLOUR) -> Decoded:
    return decode(encode(Image.new("RGB", (W, H), colour), "PNG"), max_pixels=MAX)


def subject_matte(
    box: tuple[int, int, int, int] = (20, 10, 40, 30), size: tuple[int, int] = (W, H)
) -> Image.Image:
    """Zero everywhere but a 255 rectangle (`box` is left, top, right, bottom exclusive)."""
    matte = Image.new("L", size, 0)
    ImageDraw.Draw(matte).rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=255)
    return matte


def gradient_matte() -> Image.Image:
    return Image.linear_gradient("L").resize((W, H), Image.Resampling.NEAREST)


def test_png_default_has_alpha_equal_to_the_matte() -> None:
    matte = gradient_matte()
    out = compose(source(), matte, OutputOptions())
    assert (out.content_type, out.extension, out.width, out.height) == ("image/png", "png", W, H)
    image = reopen(out.data)
    assert (image.format, image.mode, image.size) == ("PNG", "RGBA", (W, H))
    assert image.getchannel("A").tobytes() == matte.tobytes()
    assert rgb_at(image, (50, 79)) == SOURCE_COLOUR


def test_a_matte_of_another_size_is_resized() -> None:
    out = compose(source(), Image.new("L", (1024, 1024), 77), OutputOptions())
    image = reopen(out.data)
    assert image.size == (W, H)
    assert image.getchannel("A").getextrema() == (77, 77)


def test_a_non_l_matte_is_converted() -> None:
    out = compose(source(), Image.new("RGB", (W, H), (90, 90, 90)), OutputOptions())
    assert reopen(out.data).getchannel("A").getextrema() == (90, 90)


@pytest.mark.parametrize(
    ("options", "background"),
    [
        (OutputOptions(format=OutputFormat.JPEG), (255, 255, 255)),
        (OutputOptions(format=OutputFormat.JPEG, background="#FF0000"), (255, 0, 0)),
        (OutputOptions(format=OutputFormat.PNG, background="#00FF00"), (0, 255, 0)),
        (OutputOptions(format=OutputFormat.WEBP, background="#0000FF"), (0, 0, 255)),
    ],
    ids=["jpeg-white", "jpeg-red", "png-green", "webp-blue"],
)
def test_a_background_gives_an_opaque_result(
    options: OutputOptions, background: tuple[int, int, int]
) -> None:
    out = compose(source(), subject_matte(), options)
    image = reopen(out.data)
    assert image.format == options.format.value.upper()
    assert image.mode == "RGB"
    assert image.size == (W, H)
    assert near(rgb_at(image, (80, 60)), background)  # matte 0
    assert near(rgb_at(image, (30, 20)), SOURCE_COLOUR)  # matte 255


def test_jpeg_content_type() -> None:
    out = compose(source(), subject_matte(), OutputOptions(format=OutputFormat.JPEG))
    assert (out.content_type, out.extension) == ("image/jpeg", "jpg")


def test_webp_keeps_an_exact_alpha_channel() -> None:
    matte = gradient_matte()
    out = compose(source(), matte, OutputOptions(format=OutputFormat.WEBP))
    assert (out.content_type, out.extension) == ("image/webp", "webp")
    image = reopen(out.data)
    assert (image.format, image.mode, image.size) == ("WEBP", "RGBA", (W, H))
    assert image.getchannel("A").tobytes() == matte.tobytes()
    assert near(rgb_at(image, (50, 79)), SOURCE_COLOUR)


@pytest.mark.parametrize("fmt", list(OutputFormat))
def test_mask_only_returns_the_matte(fmt: OutputFormat) -> None:
    matte = gradient_matte()
    matte.info["caller"] = "kept"
    out = compose(source(), matte, OutputOptions(format=fmt, mask_only=True))
    assert matte.info == {"caller": "kept"}  # the input is not modified
    image = reopen(out.data)
    assert image.size == (W, H)
    assert image.format == fmt.value.upper()
    grey = image.convert("L")
    if fmt is OutputFormat.JPEG:
        assert image.mode == "L"
        assert max(abs(a - b) for a, b in zip(grey.tobytes(), matte.tobytes(), strict=True)) < 8
    else:
        assert image.mode == ("L" if fmt is OutputFormat.PNG else "RGB")
        assert grey.tobytes() == matte.tobytes()


@pytest.mark.parametrize(
    ("margin", "box"),
    [
        (0, (20, 10, 40, 30)),
        (5, (15, 5, 45, 35)),
        (15, (5, 0, 55, 45)),  # clamped at the top
        (1000, (0, 0, W, H)),  # clamped everywhere
    ],
)
def test_crop_to_subject_with_margin(margin: int, box: tuple[int, int, int, int]) -> None:
    options = OutputOptions(crop_to_subject=True, crop_margin=margin)
    out = compose(source(), subject_matte(), options)
    image = reopen(out.data)
    width, height = box[2] - box[0], box[3] - box[1]
    assert (out.width, out.height) == image.size == (width, height)
    expected = subject_matte().crop(box)
    assert image.getchannel("A").tobytes() == expected.tobytes()


def test_crop_applies_to_masks_and_backgrounds() -> None:
    for options in [
        OutputOptions(crop_to_subject=True, crop_margin=2, mask_only=True),
        OutputOptions(crop_to_subject=True, crop_margin=2, format=OutputFormat.JPEG),
    ]:
        assert reopen(compose(source(), subject_matte(), options).data).size == (24, 24)


def test_crop_threshold() -> None:
    faint = Image.new("L", (W, H), SUBJECT_THRESHOLD)  # all at the threshold: no subject
    faint.putpixel((60, 50), SUBJECT_THRESHOLD + 1)
    out = compose(source(), faint, OutputOptions(crop_to_subject=True))
    assert (out.width, out.height) == (1, 1)


def test_crop_of_an_empty_matte_keeps_the_whole_image() -> None:
    out = compose(source(), Image.new("L", (W, H), 0), OutputOptions(crop_to_subject=True))
    assert (out.width, out.height) == (W, H)
    assert reopen(out.data).getchannel("A").getextrema() == (0, 0)


def test_source_transparency_stays_transparent() -> None:
    rgba = Image.new("RGBA", (W, H), (*SOURCE_COLOUR, 255))
    rgba.paste((0, 0, 0, 0), (0, 0, W // 2, H))
    decoded = decode(encode(rgba, "PNG"), max_pixels=MAX)
    out = compose(decoded, Image.new("L", (W, H), 255), OutputOptions())
    alpha = reopen(out.data).getchannel("A")
    assert alpha.getpixel((10, 10)) == 0
    assert alpha.getpixel((90, 10)) == 255


def test_an_icc_profile_is_applied_and_results_are_plain_srgb() -> None:
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = encode(Image.new("RGB", (W, H), SOURCE_COLOUR), "PNG", icc_profile=profile)
    decoded = decode(data, max_pixels=MAX)
    assert decoded.icc_profile is None  # converted to sRGB on decode
    pixel = decoded.image.getpixel((5, 5))
    assert isinstance(pixel, tuple)
    assert all(abs(a - b) <= 2 for a, b in zip(pixel, SOURCE_COLOUR, strict=True))
    for fmt in OutputFormat:
        for mask_only in (False, True):
            options = OutputOptions(format=fmt, mask_only=mask_only)
            out = compose(decoded, subject_matte(), options)
            assert not reopen(out.data).info.get("icc_profile")


@pytest.mark.parametrize("fmt", list(OutputFormat))
def test_a_non_srgb_profile_changes_the_pixels_to_srgb(fmt: OutputFormat) -> None:
    linear = (128, 64, 200)  # linear light: sRGB makes it brighter, by a known curve
    tagged = encode(Image.new("RGB", (W, H), linear), "PNG", icc_profile=linear_srgb_profile())
    decoded = decode(tagged, max_pixels=MAX)
    assert decoded.icc_profile is None
    expected = [to_srgb_level(level) for level in linear]  # 187.8, 137.2, 229.1
    pixel = decoded.image.getpixel((5, 5))
    assert isinstance(pixel, tuple)
    assert all(abs(a - b) <= 1.5 for a, b in zip(pixel, expected, strict=True)), pixel
    out = reopen(compose(decoded, Image.new("L", (W, H), 255), OutputOptions(format=fmt)).data)
    assert not out.info.get("icc_profile")
    centre = out.convert("RGB").getpixel((W // 2, H // 2))
    assert isinstance(centre, tuple)
    lossy = 4 if fmt is not OutputFormat.PNG else 1.5
    assert all(abs(a - b) <= lossy for a, b in zip(centre, expected, strict=True)), centre


def test_an_unreadable_icc_profile_is_carried_to_colour_results_only() -> None:
    junk = b"not really an icc profile" * 8
    data = encode(Image.new("RGB", (W, H), SOURCE_COLOUR), "PNG", icc_profile=junk)
    decoded = decode(data, max_pixels=MAX)
    assert decoded.icc_profile == junk
    for fmt in OutputFormat:
        colour = compose(decoded, subject_matte(), OutputOptions(format=fmt))
        assert reopen(colour.data).info.get("icc_profile") == junk
        mask = compose(decoded, subject_matte(), OutputOptions(format=fmt, mask_only=True))
        assert not reopen(mask.data).info.get("icc_profile")


def test_results_carry_no_exif() -> None:
    decoded = decode(_exif_jpeg(6), max_pixels=MAX)
    for fmt in OutputFormat:
        out = compose(decoded, Image.new("L", decoded.image.size, 255), OutputOptions(format=fmt))
        assert not reopen(out.data).getexif()


@pytest.mark.parametrize(
    "options",
    [
        OutputOptions(),
        OutputOptions(format=OutputFormat.WEBP),
        OutputOptions(format=OutputFormat.JPEG, background="#123456"),
        OutputOptions(mask_only=True, crop_to_subject=True, crop_margin=3),
    ],
    ids=["png", "webp", "jpeg", "mask-crop"],
)
def test_output_is_deterministic(options: OutputOptions) -> None:
    photo = encode(Image.effect_noise((W, H), 40).convert("RGB"), "PNG")
    first = compose(decode(photo, max_pixels=MAX), gradient_matte(), options)
    second = compose(decode(photo, max_pixels=MAX), gradient_matte(), options)
    assert first == second
