"""Make the binary files of the hostile input corpus, reproducibly.

`python -m tests.reliability.corpus.generate` rewrites the committed files under
`tests/reliability/corpus/files/` (each a few KB; the bombs compress to under 60 KB)
and the big ones under `tests/reliability/corpus/.cache/` (git-ignored; the test
makes them on first use with `ensure`). Every file is built from constants: no
randomness, no clock, no network.

Bombs are written by hand (stdlib `zlib`), so making them never allocates their
decoded size: the 20000 x 20000 PNG is 400 M pixels in about 50 KB.
"""

from __future__ import annotations

import io
import struct
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Final

from PIL import Image

HERE: Final = Path(__file__).parent
FILES: Final = HERE / "files"
CACHE: Final = HERE / ".cache"
#: The service's default per-image limit (MAX_IMAGE_BYTES): the oversize file is one byte over.
MAX_IMAGE_BYTES: Final = 10 * 1024 * 1024


def _save(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def _picture(size: tuple[int, int] = (64, 48)) -> Image.Image:
    """A subject (a dark disc) on a light, even background: what the fake engine cuts out."""
    width, height = size
    image = Image.new("RGB", size, (235, 235, 230))
    cx, cy, r = width // 2, height // 2, min(width, height) // 3
    pixels = image.load()
    assert pixels is not None
    for y in range(height):
        for x in range(width):
            if (x - cx) ** 2 + (y - cy) ** 2 <= r * r:
                pixels[x, y] = (40 + x % 50, 60, 120 + y % 60)
    return image


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(side: int) -> bytes:
    """A 1-bit greyscale PNG of side x side black pixels, compressed row by row."""
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    row = bytes(1 + (side + 7) // 8)  # filter byte 0, then the packed row
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    signature = b"\x89PNG\r\n\x1a\n"
    return signature + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def gif_bomb(side: int = 30000) -> bytes:
    """A GIF whose screen and only frame claim side x side pixels, with a few bytes of data."""
    screen = b"GIF89a" + struct.pack("<HHBBB", side, side, 0x80, 0, 0) + bytes(6)
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, side, side, 0)
    lzw = b"\x02" + b"\x02\x4c\x01\x00"  # min code size 2; clear, one pixel, end
    return screen + frame + lzw + b"\x3b"


def truncated_png() -> bytes:
    whole = _save(_picture(), "PNG")
    return whole[: len(whole) * 6 // 10]


def corrupt_png() -> bytes:
    """A PNG whose compressed pixel data was overwritten (its checksum no longer matches)."""
    whole = bytearray(_save(_picture(), "PNG"))
    start = whole.index(b"IDAT") + 4
    whole[start + 8 : start + 40] = b"\xa5" * 32
    return bytes(whole)


def truncated_jpeg() -> bytes:
    whole = _save(_picture((128, 96)), "JPEG", quality=90)
    return whole[: len(whole) // 2]


def _frames() -> list[Image.Image]:
    return [_picture().rotate(angle) for angle in (0, 20, 40)]


def animated(fmt: str) -> Callable[[], bytes]:
    def build() -> bytes:
        first, *rest = _frames()
        params: dict[str, object] = {"save_all": True, "append_images": rest, "duration": 100}
        if fmt == "WEBP":
            params["lossless"] = True
        return _save(first, fmt, **params)

    return build


def cmyk_jpeg() -> bytes:
    return _save(_picture().convert("CMYK"), "JPEG", quality=90)


def png_16bit() -> bytes:
    image = Image.new("I;16", (64, 48))
    image.putdata([(x * 1000 + y * 300) % 65536 for y in range(48) for x in range(64)])
    return _save(image, "PNG")


def exif_rotated() -> bytes:
    """Stored 80 x 40 with EXIF orientation 6: shown upright it is 40 x 80."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return _save(_picture((80, 40)), "JPEG", quality=90, exif=exif.tobytes())


SVG: Final = (
    b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="64" height="48">'
    b'<image href="file:///etc/passwd"/><circle cx="32" cy="24" r="16"/></svg>\n'
)
HTML: Final = b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>\n"
PDF: Final = (
    b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
    b"2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
)


def oversize() -> bytes:
    """A real PNG header followed by padding: one byte over the default per-image limit."""
    head = _save(_picture(), "PNG")
    return head + bytes(MAX_IMAGE_BYTES + 1 - len(head))


_GOOD_IMAGE: Final = (
    b'{"filename": "a.png", "ref": {"bucket": "@BUCKET@", "key": "originals/@USER@/good.png"}}'
)
_HEAD: Final = b'{"request_id": "@REQ@", "user_id": "@USER@", "tier": "standard", '


def batch_of(count: int, image: bytes = _GOOD_IMAGE) -> bytes:
    """A batch request body (a template: `@USER@`, `@REQ@`, `@BUCKET@`) of `count` images."""
    return _HEAD + b'"images": [' + b", ".join([image] * count) + b"]}\n"


def nesting_bomb(depth: int = 100_000) -> bytes:
    """An unknown field holding an array nested `depth` deep."""
    return _HEAD + b'"images": [' + _GOOD_IMAGE + b'], "x": ' + b"[" * depth + b"]" * depth + b"}"


def huge_string() -> bytes:
    """A 900 KB correlation ref (the contract allows 256 characters)."""
    correlation = b'"correlation": {"app": "web", "ref": "' + b"x" * 900_000 + b'"}'
    return _HEAD + b'"images": [' + _GOOD_IMAGE + b"], " + correlation + b"}"


def declared_over_two_gib() -> bytes:
    """300 images each declaring 8 MB: each under the image limit, 2.4 GB together."""
    image = _GOOD_IMAGE[:-1] + b', "size_bytes": 8000000}'
    return batch_of(300, image)


#: Committed files: name -> builder.
COMMITTED: Final[dict[str, Callable[[], bytes]]] = {
    "good.png": lambda: _save(_picture(), "PNG"),
    "truncated.png": truncated_png,
    "corrupt-idat.png": corrupt_png,
    "truncated.jpg": truncated_jpeg,
    "empty.png": lambda: b"",
    "bomb-20000x20000.png": lambda: png_bomb(20000),
    "bomb-8000x8000.png": lambda: png_bomb(8000),
    "bomb-30000x30000.gif": gif_bomb,
    "animated.gif": animated("GIF"),
    "animated.webp": animated("WEBP"),
    "animated.apng.png": animated("PNG"),
    "cmyk.jpg": cmyk_jpeg,
    "gray16.png": png_16bit,
    "one-pixel.png": lambda: _save(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"),
    "wide-20000x1.png": lambda: _save(Image.new("RGB", (20000, 1), (20, 120, 200)), "PNG"),
    "exif-orientation-6.jpg": exif_rotated,
    "svg-disguised.png": lambda: SVG,
    "html-disguised.png": lambda: HTML,
    "pdf-disguised.png": lambda: PDF,
    "bitmap-disguised.png": lambda: _save(_picture(), "BMP"),
    "tiff-disguised.png": lambda: _save(_picture(), "TIFF"),
}
#: Generated on first use into `.cache/` (too big to commit).
CACHED: Final[dict[str, Callable[[], bytes]]] = {
    "oversize-10MiB+1.png": oversize,
    "images-501.json": lambda: batch_of(501),
    "images-12000-urls.json": lambda: batch_of(
        12000, b'{"filename": "a.png", "ref": {"url": "https://a.example/a.png"}}'
    ),
    "nesting-bomb.json": nesting_bomb,
    "string-900k.json": huge_string,
    "declared-2.4GB.json": declared_over_two_gib,
}


def ensure(name: str) -> Path:
    """The path of corpus file `name`: committed, or made in `.cache/` when missing."""
    if name in COMMITTED:
        return FILES / name
    path = CACHE / name
    if not path.exists():
        CACHE.mkdir(exist_ok=True)
        partial = path.with_suffix(".part")
        partial.write_bytes(CACHED[name]())
        partial.replace(path)
    return path


def main() -> None:
    """Rewrite the committed files and the cache."""
    FILES.mkdir(exist_ok=True)
    for name, build in COMMITTED.items():
        (FILES / name).write_bytes(build())
    for name in CACHED:
        (CACHE / name).unlink(missing_ok=True)
        ensure(name)
    sys.stdout.write(f"{len(COMMITTED)} files in {FILES}, {len(CACHED)} in {CACHE}\n")


if __name__ == "__main__":
    main()
