"""The demo's gallery: the HTML page, the checkerboard, masks and the contact sheet."""

import io
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest
from PIL import Image

from lumiku_bgremover.devtools.gallery import (
    CHECK_DARK,
    CHECK_LIGHT,
    SHEET_CELL,
    SHEET_GAP,
    GalleryItem,
    GallerySummary,
    SheetEntry,
    Shot,
    checkerboard,
    contact_sheet,
    mask_of,
    on_checkerboard,
    render_html,
    write_gallery,
)


def summary(**changes: object) -> GallerySummary:
    values: dict[str, object] = {
        "batch_id": "b_1", "tier": "standard", "engine": "local / isnet-medium", "images": 2,
        "succeeded": 1, "failed": 1, "credits_charged": 16, "credits_refunded": 8,
        "wall_s": 3.25, "archive": "cutouts.zip", "contact_sheet": "contact-sheet.png",
    }  # fmt: skip
    values.update(changes)
    return GallerySummary(**values)  # type: ignore[arg-type]


DONE = GalleryItem(
    name="cat & dog.png", original="originals/cat & dog.png", width=640, height=480,
    cutout="cutouts/cat & dog.png", mask="masks/cat & dog.png", processing_ms=1500,
    engine="local", model="isnet-medium", result_bytes=204_800,
)  # fmt: skip
FAILED = GalleryItem(
    name="<script>alert(1)</script>.png", original="originals/x.png", width=10, height=10,
    error="decode_failed: not an image <b>",
)  # fmt: skip


class Sources(HTMLParser):
    """Every src and href of a page, and its visible text."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.links += [v for k, v in attrs if k in {"src", "href"} and v is not None]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> Sources:
    parser = Sources()
    parser.feed(page)
    return parser


def test_the_page_links_every_image_url_quoted() -> None:
    page = parse(render_html(summary(), [DONE, FAILED]))
    assert page.links == [
        "cutouts.zip",
        "contact-sheet.png",
        "originals/cat%20%26%20dog.png",
        "cutouts/cat%20%26%20dog.png",
        "masks/cat%20%26%20dog.png",
        "originals/x.png",
    ]


def test_the_page_escapes_every_text() -> None:
    html = render_html(summary(tier="<i>standard</i>"), [DONE, FAILED])
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.png" in html
    assert "not an image &lt;b&gt;" in html
    assert "&lt;i&gt;standard&lt;/i&gt;" in html


def test_the_page_says_what_happened() -> None:
    text = " ".join(parse(render_html(summary(), [DONE, FAILED])).text)
    assert "1 of 2 done, 1 failed" in text
    assert "16 credits" in text  # charged
    assert "8 credits" in text  # refunded
    assert "1.50 s" in text  # the one timed image, and so the mean
    assert "3.2 s" in text  # batch time (3.25 rounds to even)
    assert "640\u00d7480" in text
    assert "PNG 200 KB" in text
    assert "decode_failed: not an image <b>" in text
    assert text.count("done") >= 2


def test_a_failed_image_has_no_cutout_and_a_failed_badge() -> None:
    html = render_html(summary(), [FAILED])
    assert 'class="badge failed"' in html
    assert "cutouts/" not in html
    assert 'class="checker' not in html


def test_the_page_without_archive_has_no_download_link() -> None:
    page = parse(render_html(summary(archive=None, contact_sheet=None), [DONE]))
    assert not any(link.endswith((".zip", "contact-sheet.png")) for link in page.links)


def test_checkerboard_alternates_squares() -> None:
    board = checkerboard((50, 30), square=10)
    assert board.size == (50, 30)
    assert board.getpixel((0, 0)) == CHECK_LIGHT
    assert board.getpixel((10, 0)) == CHECK_DARK
    assert board.getpixel((0, 10)) == CHECK_DARK
    assert board.getpixel((10, 10)) == CHECK_LIGHT
    assert board.getpixel((45, 25)) == CHECK_LIGHT  # the tiles repeat past the first


def test_on_checkerboard_shows_the_board_through_transparency() -> None:
    image = Image.new("RGBA", (40, 40), (255, 0, 0, 0))
    image.putpixel((0, 0), (255, 0, 0, 255))
    shown = on_checkerboard(image)
    assert shown.mode == "RGB"
    assert shown.getpixel((0, 0)) == (255, 0, 0)
    assert shown.getpixel((13, 0)) == CHECK_DARK


def test_mask_of_is_the_alpha_channel() -> None:
    image = Image.new("RGBA", (4, 4), (9, 9, 9, 0))
    image.putpixel((1, 2), (9, 9, 9, 200))
    mask = mask_of(image)
    assert mask.mode == "L"
    assert mask.getpixel((1, 2)) == 200
    assert mask.getpixel((0, 0)) == 0
    assert mask_of(Image.new("RGB", (3, 3))).getextrema() == (255, 255)


def test_contact_sheet_lays_out_pairs_in_bands() -> None:
    red = Image.new("RGB", (100, 100), (255, 0, 0))
    cut = Image.new("RGBA", (100, 100), (0, 0, 255, 255))
    entries = [SheetEntry(f"p{i}.png", red, cut if i != 2 else None, "1 s") for i in range(3)]
    sheet = contact_sheet(entries, columns=2, cell=50, title="demo")
    assert sheet.width == 2 * 50 + 3 * SHEET_GAP
    assert sheet.height > 2 * (2 * 50)  # two bands of original + cut-out
    # the first original, top left under the title; its cut-out right below it
    assert sheet.getpixel((SHEET_GAP + 25, 44 + 25)) == (255, 0, 0)
    assert sheet.getpixel((SHEET_GAP + 25, 44 + 50 + SHEET_GAP // 2 + 25)) == (0, 0, 255)


def test_contact_sheet_default_cells_and_no_entries() -> None:
    image = Image.new("RGB", (300, 200), (0, 200, 0))
    sheet = contact_sheet([SheetEntry("a.png", image, None)])
    assert sheet.width == SHEET_CELL + 2 * SHEET_GAP
    with pytest.raises(ValueError, match="at least one"):
        contact_sheet([])


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def test_write_gallery_writes_every_file_the_page_names(tmp_path: Path) -> None:
    cutout = Image.new("RGBA", (64, 48), (0, 128, 0, 0))
    cutout.paste((0, 128, 0, 255), (10, 10, 30, 30))
    shots = [
        Shot(name="green field.jpg", original=png(Image.new("RGB", (64, 48), "green")),
             result_name="green field.png", cutout=png(cutout), processing_ms=900,
             engine="fake", model="fake-matte"),
        Shot(name="broken.png", original=b"not an image", result_name="broken.png",
             error="decode_failed: bad bytes"),
    ]  # fmt: skip
    page = write_gallery(tmp_path, summary(archive=None), shots, title="t")
    assert page == tmp_path / "index.html"
    links = parse(page.read_text()).links
    assert len(links) == 5  # the contact sheet, 2 originals, 1 cut-out, 1 mask
    for link in links:
        assert (tmp_path / unquote(link)).is_file(), link
    with Image.open(tmp_path / "masks" / "green field.png") as mask:
        assert mask.mode == "L"
        assert mask.getpixel((20, 20)) == 255
        assert mask.getpixel((0, 0)) == 0
    with Image.open(tmp_path / "contact-sheet.png") as sheet:
        assert sheet.format == "PNG"
    text = page.read_text()
    assert re.search(r"0\.90 s", text)
    assert "64&times;48" in text
    assert (tmp_path / "originals" / "broken.png").read_bytes() == b"not an image"
