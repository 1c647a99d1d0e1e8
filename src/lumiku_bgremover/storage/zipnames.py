"""Safe, unique entry names for the batch ZIP, made from the users' original filenames.

Pure: no I/O. A name is safe when it unpacks as a plain file in the current directory on
Windows, macOS and Linux: no directory part, no control or bidi-override characters, none
of the characters Windows forbids, no leading or trailing dots or spaces, no reserved
device name, NFC-normalised and at most `MAX_NAME_BYTES` UTF-8 bytes.
"""

from __future__ import annotations

import re
import unicodedata
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

#: Longest entry name, in UTF-8 bytes (file systems allow 255; leave room for a folder).
MAX_NAME_BYTES = 200
#: Characters Windows refuses in a file name (the slashes also separate directories).
ILLEGAL_CHARS = frozenset('<>:"/\\|?*')
#: Device names Windows reserves, with or without an extension, in any case.
RESERVED_NAMES = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{dev}{n}" for dev in ("COM", "LPT") for n in "0123456789\u00b9\u00b2\u00b3"}
)
#: Invisible characters that reorder or hide text ("photo<U+202E>gnp.exe" spoofing).
_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
_DROPPED_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
_EXTENSION_RE = re.compile(r"[A-Za-z0-9]{1,8}")
_TRIM = ". "


def zip_names(filenames: Sequence[str], extension: str) -> list[str]:
    """Safe, unique ZIP entry names for `filenames`, in the same order.

    Each name loses any directory part (`/` or `\\`), control and bidi characters and
    the characters Windows forbids; leading and trailing dots and spaces go; a reserved
    device name gets a leading "_"; the extension becomes `extension` ("png" or ".png");
    a name left empty becomes `image-<n>` (n counts from 1 in `filenames`). Duplicates,
    compared case-insensitively, become `a (2).png`, `a (3).png`, ... in input order.
    Every name fits in `MAX_NAME_BYTES` UTF-8 bytes without cutting a character.
    """
    ext = _normalise_extension(extension)
    taken: set[str] = set()
    names: list[str] = []
    for index, filename in enumerate(filenames, start=1):
        stem = _clean_stem(filename) or f"image-{index}"
        name = _first_free(stem, ext, taken)
        taken.add(_fold(name))
        names.append(name)
    return names


def is_safe_zip_name(name: str) -> bool:
    """Whether `name` is a safe entry name (see the module docstring); pure."""
    if not name or unicodedata.normalize("NFC", name) != name:
        return False
    if len(name.encode("utf-8", errors="surrogatepass")) > MAX_NAME_BYTES:
        return False
    if name[0] in _TRIM or name[-1] in _TRIM:
        return False
    if any(_is_dropped(ch) or ch in ILLEGAL_CHARS for ch in name):
        return False
    return not _is_reserved(name)


def case_duplicates(names: Iterable[str]) -> list[str]:
    """The names in `names` that repeat an earlier one, compared case-insensitively."""
    seen: set[str] = set()
    repeated: list[str] = []
    for name in names:
        folded = _fold(name)
        if folded in seen:
            repeated.append(name)
        seen.add(folded)
    return repeated


def _normalise_extension(extension: str) -> str:
    ext = extension.removeprefix(".")
    if not _EXTENSION_RE.fullmatch(ext):
        raise ValueError(f"extension must be 1-8 ASCII letters or digits: {extension!r}")
    return ext.lower()


def _clean_stem(filename: str) -> str:
    """The cleaned base name of `filename`, without its extension; may be empty."""
    base = re.split(r"[/\\]", filename)[-1]
    kept = "".join(ch for ch in base if not _is_dropped(ch) and ch not in ILLEGAL_CHARS)
    # NFC after the drops: a dropped character may have separated a letter from its accent.
    kept = unicodedata.normalize("NFC", kept).strip(_TRIM)
    stem, dot, ext = kept.rpartition(".")
    if dot and _EXTENSION_RE.fullmatch(ext):
        kept = stem.rstrip(_TRIM)
    if _is_reserved(kept):
        kept = f"_{kept}"
    return kept


def _first_free(stem: str, ext: str, taken: set[str]) -> str:
    """`stem.ext`, else `stem (2).ext`, `stem (3).ext`, ...: the first one not in `taken`."""
    copy = 1
    while True:
        marker = "" if copy == 1 else f" ({copy})"
        name = f"{_fit(stem, f'{marker}.{ext}')}{marker}.{ext}"
        if _fold(name) not in taken:
            return name
        copy += 1


def _fit(stem: str, suffix: str) -> str:
    """`stem` cut (between characters) so that `stem + suffix` fits in MAX_NAME_BYTES."""
    budget = MAX_NAME_BYTES - len(suffix.encode("utf-8"))
    encoded = stem.encode("utf-8", errors="surrogatepass")
    if len(encoded) <= budget:
        return stem
    # A prefix of an NFC string is NFC; "ignore" drops a character cut in half.
    fitted = encoded[:budget].decode("utf-8", errors="ignore").rstrip(_TRIM)
    return fitted or "image"


def _is_dropped(ch: str) -> bool:
    return ch in _BIDI_CONTROLS or unicodedata.category(ch) in _DROPPED_CATEGORIES


def _is_reserved(name: str) -> bool:
    """Windows reserves `CON`, `con.txt`, `Con .tar.gz`, ...: the part before the first dot."""
    return name.split(".", 1)[0].rstrip(" ").upper() in RESERVED_NAMES


def _fold(name: str) -> str:
    """The key under which two names count as the same on a case-insensitive file system."""
    return unicodedata.normalize("NFC", name.casefold())
