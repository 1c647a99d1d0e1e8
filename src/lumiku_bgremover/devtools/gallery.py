"""The demo's before/after gallery: an HTML page and a contact-sheet image.

The core is pure: `render_html` turns a summary and its items into a self-contained
page (inline CSS, images by relative path), `contact_sheet` turns images into one
image. `write_gallery` is the one function that touches the disk: it lays out the
originals, cut-outs and masks in a folder and writes the page and the sheet there.
"""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final
from urllib.parse import quote

from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "GalleryItem",
    "GallerySummary",
    "SheetEntry",
    "Shot",
    "checkerboard",
    "contact_sheet",
    "mask_of",
    "on_checkerboard",
    "render_html",
    "write_gallery",
]

#: Colours of the transparency checkerboard (the page uses the same ones).
CHECK_LIGHT: Final = (255, 255, 255)
CHECK_DARK: Final = (214, 218, 224)
#: Contact sheet: background, caption colour, side of a cell, gap between cells.
SHEET_BACKGROUND: Final = (246, 247, 249)
SHEET_INK: Final = (40, 44, 52)
SHEET_CELL: Final = 240
SHEET_GAP: Final = 16


@dataclass(frozen=True, slots=True, kw_only=True)
class GalleryItem:
    """One image of the batch; paths are relative to the page."""

    name: str
    original: str
    width: int | None = None  #: None: the original could not be decoded
    height: int | None = None
    cutout: str | None = None
    mask: str | None = None
    processing_ms: int | None = None
    engine: str | None = None
    model: str | None = None
    result_bytes: int | None = None
    error: str | None = None  #: "code: message" of a failed image


@dataclass(frozen=True, slots=True, kw_only=True)
class GallerySummary:
    """What the page's header says about the batch."""

    batch_id: str
    tier: str
    engine: str
    images: int
    succeeded: int
    failed: int
    credits_charged: int
    credits_refunded: int
    wall_s: float
    archive: str | None = None
    contact_sheet: str | None = None
    generated_at: str = ""


def _kb(size: int) -> str:
    return f"{size / 1024:.0f} KB" if size < 1024 * 1024 else f"{size / 1024 / 1024:.1f} MB"


def _seconds(ms: float) -> str:
    return f"{ms / 1000:.2f} s"


def _meta(item: GalleryItem) -> str:
    parts = [f"{item.width}&times;{item.height}"] if item.width and item.height else []
    if item.processing_ms is not None:
        parts.append(_seconds(item.processing_ms))
    if item.engine and item.model:
        parts.append(html.escape(f"{item.engine} / {item.model}"))
    if item.result_bytes is not None:
        parts.append(f"PNG {_kb(item.result_bytes)}")
    return " &middot; ".join(parts)


def _href(path: str) -> str:
    """A relative path as an attribute value: URL-quoted, then HTML-escaped."""
    return html.escape(quote(path))


def _panel(label: str, src: str | None, alt: str, *, checker: bool = False) -> str:
    kind = "frame checker" if checker else "frame"
    body = (
        f'<img src="{_href(src)}" alt="{html.escape(alt)}" loading="lazy">'
        if src is not None
        else '<span class="missing">no result</span>'
    )
    return (
        f'<figure class="panel"><div class="{kind}">{body}</div>'
        f"<figcaption>{label}</figcaption></figure>"
    )


def _card(item: GalleryItem) -> str:
    name = html.escape(item.name)
    badge = '<span class="badge ok">done</span>'
    panels = [_panel("Original", item.original, f"{item.name}, original")]
    if item.error is None:
        panels.append(_panel("Cut-out", item.cutout, f"{item.name}, cut-out", checker=True))
        panels.append(_panel("Mask", item.mask, f"{item.name}, mask"))
    else:
        badge = '<span class="badge failed">failed</span>'
        panels.append(f'<div class="error">{html.escape(item.error)}</div>')
    return (
        f'<article class="card"><header><h2>{name}</h2>{badge}</header>'
        f'<div class="panels">{"".join(panels)}</div>'
        f"<footer>{_meta(item)}</footer></article>"
    )


def _stat(label: str, value: str) -> str:
    return f'<div class="stat"><span>{label}</span><strong>{value}</strong></div>'


def _stats(summary: GallerySummary, items: Sequence[GalleryItem]) -> str:
    times = [i.processing_ms for i in items if i.processing_ms is not None]
    mean = _seconds(sum(times) / len(times)) if times else "n/a"
    done = f"{summary.succeeded} of {summary.images} done"
    if summary.failed:
        done += f", {summary.failed} failed"
    return "".join(
        [
            _stat("images", done),
            _stat("tier", html.escape(summary.tier)),
            _stat("engine", html.escape(summary.engine)),
            _stat("charged", f"{summary.credits_charged} credits"),
            _stat("refunded", f"{summary.credits_refunded} credits"),
            _stat("per image", mean),
            _stat("batch time", f"{summary.wall_s:.1f} s"),
        ]
    )


def _links(summary: GallerySummary) -> str:
    links = []
    if summary.archive is not None:
        links.append(f'<a href="{_href(summary.archive)}">Download the ZIP</a>')
    if summary.contact_sheet is not None:
        links.append(f'<a href="{_href(summary.contact_sheet)}">Contact sheet</a>')
    return f"<nav>{''.join(links)}</nav>" if links else ""


_CSS: Final = """
:root { --ink: #1f2430; --muted: #646b7a; --line: #e3e6eb; --accent: #5b4ef0; }
* { box-sizing: border-box; }
body { margin: 0; background: #f3f4f7; color: var(--ink);
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 28px 24px 48px; }
.top { display: flex; align-items: baseline; justify-content: space-between; gap: 16px; }
h1 { font-size: 24px; margin: 0; letter-spacing: -0.01em; }
h1 small { font-weight: 500; color: var(--muted); font-size: 15px; margin-left: 8px; }
.batch { color: var(--muted); font-size: 13px; margin: 4px 0 18px; }
.batch code { background: #e9ebf0; padding: 1px 6px; border-radius: 4px; }
nav a { display: inline-block; margin-left: 8px; padding: 7px 14px; border-radius: 8px;
  background: var(--accent); color: #fff; text-decoration: none; font-weight: 600;
  font-size: 14px; }
nav a + a { background: #fff; color: var(--accent); border: 1px solid var(--accent); }
.stats { display: flex; flex-wrap: wrap; gap: 10px; margin-bottom: 22px; }
.stat { flex: 1 1 auto; background: #fff; border: 1px solid var(--line); border-radius: 10px;
  padding: 9px 14px; white-space: nowrap; }
.stat span { display: block; color: var(--muted); font-size: 11px; text-transform: uppercase;
  letter-spacing: .06em; }
.stat strong { font-size: 14px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr));
  gap: 18px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 14px;
  overflow: hidden; box-shadow: 0 1px 2px rgba(20, 24, 40, .04); }
.card header { display: flex; align-items: center; gap: 10px; padding: 12px 16px 0; }
.card h2 { font-size: 15px; margin: 0; }
.badge { font-size: 11px; font-weight: 700; padding: 2px 8px; border-radius: 99px;
  text-transform: uppercase; letter-spacing: .05em; }
.badge.ok { background: #e3f6ea; color: #17743a; }
.badge.failed { background: #fde6e6; color: #a52222; }
.panels { display: grid; grid-template-columns: repeat(3, 1fr); gap: 8px; padding: 10px 14px; }
.panel { margin: 0; }
.frame { height: 176px; border-radius: 10px; background: #eceef2; display: flex;
  align-items: center; justify-content: center; overflow: hidden; }
.frame img { max-width: 100%; max-height: 100%; object-fit: contain; display: block; }
.panel figcaption { margin-top: 5px; text-align: center; color: var(--muted); font-size: 11px;
  font-weight: 600; text-transform: uppercase; letter-spacing: .06em; }
.checker { background-color: #fff;
  background-image: conic-gradient(#d6dae0 25%, #fff 0 50%, #d6dae0 0 75%, #fff 0);
  background-size: 20px 20px; }
.error { grid-column: span 2; height: 176px; border-radius: 10px; background: #fdf1f1;
  color: #a52222; padding: 14px; font: 13px/1.4 ui-monospace, monospace; overflow: auto; }
.missing { color: var(--muted); }
.card footer { border-top: 1px solid var(--line); padding: 7px 14px; color: var(--muted);
  font-size: 13px; }
@media (max-width: 600px) { .cards { grid-template-columns: 1fr; }
  .panels { grid-template-columns: 1fr; } }
"""


def render_html(summary: GallerySummary, items: Sequence[GalleryItem]) -> str:
    """The gallery page: a header with the batch's numbers, then one card per image
    (original, cut-out on a checkerboard, mask, timing). Every text is escaped."""
    when = f" &middot; {html.escape(summary.generated_at)}" if summary.generated_at else ""
    cards = "\n".join(_card(item) for item in items)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>lumiku-bgremover demo: {html.escape(summary.batch_id)}</title>
<style>{_CSS}</style>
</head>
<body>
<main>
<div class="top">
<h1>Background removal<small>lumiku-bgremover demo</small></h1>{_links(summary)}
</div>
<p class="batch">batch <code>{html.escape(summary.batch_id)}</code>{when}</p>
<section class="stats">{_stats(summary, items)}</section>
<section class="cards">
{cards}
</section>
</main>
</body>
</html>
"""


def checkerboard(size: tuple[int, int], square: int = 12) -> Image.Image:
    """An RGB checkerboard of `size`, the usual backdrop of transparent images."""
    width, height = size
    tile = Image.new("RGB", (2 * square, 2 * square), CHECK_LIGHT)
    draw = ImageDraw.Draw(tile)
    draw.rectangle((square, 0, 2 * square - 1, square - 1), fill=CHECK_DARK)
    draw.rectangle((0, square, square - 1, 2 * square - 1), fill=CHECK_DARK)
    board = Image.new("RGB", size)
    for top in range(0, height, 2 * square):
        for left in range(0, width, 2 * square):
            board.paste(tile, (left, top))
    return board


def on_checkerboard(image: Image.Image) -> Image.Image:
    """`image` (with alpha) composited on a checkerboard, as RGB."""
    rgba = image.convert("RGBA")
    board = checkerboard(rgba.size).convert("RGBA")
    return Image.alpha_composite(board, rgba).convert("RGB")


def mask_of(cutout: Image.Image) -> Image.Image:
    """The alpha channel of a cut-out as a grey image (white: kept)."""
    if "A" not in cutout.getbands():
        return Image.new("L", cutout.size, 255)
    return cutout.getchannel("A")


@dataclass(frozen=True, slots=True)
class SheetEntry:
    """One column of the contact sheet: the original above its result."""

    name: str
    original: Image.Image | None
    cutout: Image.Image | None
    caption: str = ""


def _fit(image: Image.Image, side: int) -> Image.Image:
    copy = image.copy()
    copy.thumbnail((side, side), Image.Resampling.LANCZOS)
    return copy


def _cell(image: Image.Image | None, side: int, *, checker: bool) -> Image.Image:
    cell = Image.new("RGB", (side, side), (232, 234, 238))
    if image is None:
        return cell
    thumb = _fit(image, side)
    shown = on_checkerboard(thumb) if checker else thumb.convert("RGB")
    cell.paste(shown, ((side - thumb.width) // 2, (side - thumb.height) // 2))
    return cell


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def contact_sheet(
    entries: Sequence[SheetEntry], *, title: str = "", columns: int = 5, cell: int = SHEET_CELL
) -> Image.Image:
    """Originals above their cut-outs (on a checkerboard), `columns` per band, a
    caption under each pair and an optional title on top."""
    if not entries:
        raise ValueError("a contact sheet needs at least one entry")
    columns = max(1, min(columns, len(entries)))
    bands = -(-len(entries) // columns)
    head = 44 if title else SHEET_GAP
    caption_h = 40
    band_h = 2 * cell + SHEET_GAP // 2 + caption_h + SHEET_GAP
    width = columns * cell + (columns + 1) * SHEET_GAP
    sheet = Image.new("RGB", (width, head + bands * band_h), SHEET_BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((SHEET_GAP, 12), title, fill=SHEET_INK, font=_font(20))
    for index, entry in enumerate(entries):
        left = SHEET_GAP + (index % columns) * (cell + SHEET_GAP)
        top = head + (index // columns) * band_h
        sheet.paste(_cell(entry.original, cell, checker=False), (left, top))
        sheet.paste(_cell(entry.cutout, cell, checker=True), (left, top + cell + SHEET_GAP // 2))
        text_top = top + 2 * cell + SHEET_GAP // 2 + 4
        draw.text((left, text_top), entry.name[:34], fill=SHEET_INK, font=_font(14))
        draw.text((left, text_top + 18), entry.caption[:40], fill=(100, 106, 120), font=_font(12))
    return sheet


@dataclass(frozen=True, slots=True, kw_only=True)
class Shot:
    """One image as the gallery writer gets it: bytes in, bytes out, and how it went."""

    name: str  #: the original's file name
    original: bytes
    result_name: str  #: the cut-out's file name (as in the ZIP)
    cutout: bytes | None = None
    processing_ms: int | None = None
    engine: str | None = None
    model: str | None = None
    error: str | None = None


#: Sub-folders `write_gallery` fills.
ORIGINALS: Final = "originals"
CUTOUTS: Final = "cutouts"
MASKS: Final = "masks"
SHEET_NAME: Final = "contact-sheet.png"
PAGE_NAME: Final = "index.html"


def _save(path: Path, data: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path.parent.name + "/" + path.name


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _open(data: bytes) -> Image.Image | None:
    """The decoded image, or None for bytes that are no image (a failed item's)."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return image


def _lay_out(folder: Path, shot: Shot) -> tuple[GalleryItem, SheetEntry]:
    original = _open(shot.original)
    item = GalleryItem(
        name=shot.name, original=_save(folder / ORIGINALS / shot.name, shot.original),
        width=original.width if original else None,
        height=original.height if original else None, processing_ms=shot.processing_ms,
        engine=shot.engine, model=shot.model, error=shot.error,
    )  # fmt: skip
    if shot.cutout is None:
        return item, SheetEntry(shot.name, original, None, shot.error or "failed")
    cutout = _open(shot.cutout)
    item = replace(
        item,
        cutout=_save(folder / CUTOUTS / shot.result_name, shot.cutout),
        result_bytes=len(shot.cutout),
    )
    if cutout is not None:
        mask_name = Path(shot.result_name).with_suffix(".png").name
        item = replace(item, mask=_save(folder / MASKS / mask_name, _png(mask_of(cutout))))
    caption = _seconds(shot.processing_ms) if shot.processing_ms is not None else ""
    return item, SheetEntry(shot.name, original, cutout, caption)


def write_gallery(
    folder: Path, summary: GallerySummary, shots: Sequence[Shot], *, title: str = ""
) -> Path:
    """Write originals/, cut-outs/, masks/, the contact sheet and index.html under
    `folder` (created if needed); the path of index.html."""
    folder.mkdir(parents=True, exist_ok=True)
    laid_out = [_lay_out(folder, shot) for shot in shots]
    items = [item for item, _ in laid_out]
    sheet = contact_sheet([entry for _, entry in laid_out], title=title)
    sheet.save(folder / SHEET_NAME, format="PNG", optimize=True)
    page = folder / PAGE_NAME
    page.write_text(render_html(summary, items), encoding="utf-8")
    return page
