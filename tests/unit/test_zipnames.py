"""`zip_names`: safe, unique ZIP entry names from users' filenames (pure, table-tested)."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lumiku_bgremover.storage.zipnames import (
    MAX_NAME_BYTES,
    case_duplicates,
    is_safe_zip_name,
    zip_names,
)

ONE_NAME = [
    # directory parts, both separators, traversal
    ("photos/2024/beach.jpg", "beach.png"),
    ("../../etc/passwd", "passwd.png"),
    ("C:\\x\\y.jpg", "y.png"),
    ("C:y.jpg", "Cy.png"),
    ("\\\\server\\share\\..\\pic.webp", "pic.png"),
    ("photos/", "image-1.png"),
    # control, bidi and Windows-illegal characters
    ("a\x00b\nc\td\x7f.jpg", "abcd.png"),
    ("photo\u202egnp.exe", "photognp.png"),
    ("line\u2028break.jpg", "linebreak.png"),
    ('what<is>this:"file"|?*.jpg', "whatisthisfile.png"),
    # reserved Windows device names, any case, with or without extension
    ("CON", "_CON.png"),
    ("con.jpg", "_con.png"),
    ("Com1.tar.gz", "_Com1.tar.png"),
    ("lpt9 .jpg", "_lpt9.png"),
    ("AUX.", "_AUX.png"),
    ("nul.txt", "_nul.png"),
    ("COM\u00b9.jpg", "_COM\u00b9.png"),
    ("CONSOLE.jpg", "CONSOLE.png"),
    ("com10.jpg", "com10.png"),
    # leading and trailing dots and spaces
    ("photo. . .jpg", "photo.png"),
    ("  photo  ", "photo.png"),
    ("photo.jpg. ", "photo.png"),
    (".hidden", "hidden.png"),
    (".jpg", "jpg.png"),
    # empty or nothing left
    ("", "image-1.png"),
    ("...", "image-1.png"),
    (" . ", "image-1.png"),
    ("***", "image-1.png"),
    ("\x01\x02", "image-1.png"),
    # the extension is replaced only when there is one
    ("README", "README.png"),
    ("Mr. Smith", "Mr. Smith.png"),
    ("archive.tar.gz", "archive.tar.png"),
    ("photo.JPEG", "photo.png"),
    ("photo.png", "photo.png"),
    # unicode kept, NFC-normalised
    ("e\u0301te\u0301.jpg", "\u00e9t\u00e9.png"),
    ("日本語の写真.jpeg", "日本語の写真.png"),
    ("🐱 cat.heic", "🐱 cat.png"),
]


@pytest.mark.parametrize(("filename", "expected"), ONE_NAME)
def test_one_name(filename: str, expected: str) -> None:
    assert zip_names([filename], "png") == [expected]
    assert is_safe_zip_name(expected)


def test_empty_names_are_numbered_by_position() -> None:
    assert zip_names(["a.jpg", "", "b.jpg", "..."], "png") == [
        "a.png", "image-2.png", "b.png", "image-4.png",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("filenames", "expected"),
    [
        (["a.jpg", "A.JPG", "a.png", "b/a.jpg"], ["a.png", "A (2).png", "a (3).png", "a (4).png"]),
        (["a (2).jpg", "a.jpg", "a.jpg"], ["a (2).png", "a.png", "a (3).png"]),
        (["a.jpg", "a.jpg", "a (2).jpg"], ["a.png", "a (2).png", "a (2) (2).png"]),
        (["Straße.jpg", "STRASSE.jpg"], ["Straße.png", "STRASSE (2).png"]),
        (["É.jpg", "e\u0301.jpg", "é.jpg"], ["É.png", "é (2).png", "é (3).png"]),
        (["", "image-1.jpg"], ["image-1.png", "image-1 (2).png"]),
    ],
)
def test_duplicates_are_numbered_case_insensitively_in_input_order(
    filenames: list[str], expected: list[str]
) -> None:
    assert zip_names(filenames, "png") == expected


def test_long_names_are_cut_to_the_byte_limit_between_characters() -> None:
    assert MAX_NAME_BYTES == 200
    names = zip_names(["x" * 300 + ".jpg", "x" * 300 + ".jpg"], "png")
    assert names == ["x" * 196 + ".png", "x" * 192 + " (2).png"]
    assert [len(n.encode()) for n in names] == [200, 200]
    # three-byte characters: 65 fit in the 196 bytes left by ".png"
    assert zip_names(["日" * 100], "png") == ["日" * 65 + ".png"]
    # four-byte characters: "a" + 48 cats is 193 bytes; a 49th would not fit
    assert zip_names(["a" + "🐱" * 60], "png") == ["a" + "🐱" * 48 + ".png"]
    # a cut that ends in spaces or dots is trimmed again
    assert zip_names(["a" * 195 + " ....." + "b" * 10], "png") == ["a" * 195 + ".png"]


@pytest.mark.parametrize(
    ("extension", "suffix"), [("png", ".png"), (".WebP", ".webp"), ("JPG", ".jpg")]
)
def test_extension_forms(extension: str, suffix: str) -> None:
    assert zip_names(["photo.heic"], extension) == [f"photo{suffix}"]


@pytest.mark.parametrize("extension", ["", ".", "p/ng", "png ", "toolongext", "ün"])
def test_bad_extension_is_refused(extension: str) -> None:
    with pytest.raises(ValueError, match="extension"):
        zip_names(["a.jpg"], extension)


@pytest.mark.parametrize(
    "name",
    [
        "", ".png", "a.png.", "a.png ", " a.png", "a/b.png", "a\\b.png", "..", "a\x00.png",
        "a\u202e.png", "CON.png", "con", "Lpt1.tar.png", "x" * 197 + ".png",
        "e\u0301.png",  # not NFC
        "a:b.png",
    ],
)  # fmt: skip
def test_unsafe_names(name: str) -> None:
    assert not is_safe_zip_name(name)


@pytest.mark.parametrize("name", ["a.png", "_CON.png", "a (2).png", "été.png", "x" * 196 + ".png"])
def test_safe_names(name: str) -> None:
    assert is_safe_zip_name(name)


def test_case_duplicates() -> None:
    assert case_duplicates(["a.png", "b.png", "A.PNG", "ß.png", "SS.png", "a.png"]) == [
        "A.PNG", "SS.png", "a.png",
    ]  # fmt: skip
    assert case_duplicates([]) == []


#: Any code point (surrogates included) mixed with the characters the rules care about.
_TRICKY = st.characters(exclude_categories=()) | st.sampled_from(
    list("aAsSß./\\ :*\x00\t\u0301\u202eCONLPT1")
)


@given(st.lists(st.text(_TRICKY, max_size=300), max_size=30))
def test_every_output_is_safe_unique_and_stable(filenames: list[str]) -> None:
    names = zip_names(filenames, "png")
    assert len(names) == len(filenames)
    assert all(is_safe_zip_name(n) and n.endswith(".png") for n in names)
    assert len({unicodedata.normalize("NFC", n.casefold()) for n in names}) == len(names)
    assert all(len(n.encode("utf-8")) <= MAX_NAME_BYTES for n in names)
    assert zip_names(names, "png") == names  # safe unique names pass through unchanged
