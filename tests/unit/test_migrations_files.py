"""The packaged SQL migrations and `load_migrations`: names, order, checksums (no database)."""

import hashlib
import re
from importlib.resources import files
from pathlib import Path

import pytest

from lumiku_bgremover.db import Migration, MigrationError, load_migrations


def write(directory: Path, **files_by_name: str | bytes) -> Path:
    for name, content in files_by_name.items():
        data = content.encode() if isinstance(content, str) else content
        (directory / name).write_bytes(data)
    return directory


def test_packaged_migrations_start_with_the_initial_schema() -> None:
    migrations = load_migrations()
    assert migrations[0].version == 1
    assert migrations[0].name == "0001_initial"
    assert "CREATE TABLE credit_ledger" in migrations[0].sql


def test_packaged_migrations_have_increasing_versions_and_file_checksums() -> None:
    migrations = load_migrations()
    versions = [m.version for m in migrations]
    assert versions == sorted(set(versions))
    folder = files("lumiku_bgremover.db") / "migrations"
    for migration in migrations:
        data = (folder / f"{migration.name}.sql").read_bytes()
        assert migration.checksum == hashlib.sha256(data).hexdigest()
        assert migration.sql == data.decode()


def test_sorted_by_version_not_by_listing_order(tmp_path: Path) -> None:
    write(tmp_path, **{"0010_ten.sql": "SELECT 10;", "0002_two.sql": "", "0001_one.sql": "x"})
    assert [m.name for m in load_migrations(tmp_path)] == ["0001_one", "0002_two", "0010_ten"]
    assert [m.version for m in load_migrations(tmp_path)] == [1, 2, 10]


def test_other_files_are_ignored(tmp_path: Path) -> None:
    write(tmp_path, **{"0001_one.sql": "SELECT 1;", "README.md": "notes", "0002_x.sql.bak": ""})
    (tmp_path / "0003_dir.sql").mkdir()
    assert [m.name for m in load_migrations(tmp_path)] == ["0001_one"]


def test_empty_directory_gives_no_migrations(tmp_path: Path) -> None:
    assert load_migrations(tmp_path) == []


@pytest.mark.parametrize(
    "name",
    [
        "1_short.sql",
        "00001_long.sql",
        "0001-dash.sql",
        "0001_Upper.sql",
        "0001_.sql",
        "0001_trailing_.sql",
        "0001__double.sql",
        "abcd_letters.sql",
        "0001.sql",
        "0000_zero.sql",
    ],
)
def test_bad_file_names_are_refused(tmp_path: Path, name: str) -> None:
    write(tmp_path, **{name: "SELECT 1;", "0002_fine.sql": "SELECT 2;"})
    with pytest.raises(MigrationError, match=re.escape(name)):
        load_migrations(tmp_path)


def test_duplicate_versions_are_refused_naming_both(tmp_path: Path) -> None:
    write(tmp_path, **{"0001_one.sql": "a", "0002_two.sql": "b", "0002_deux.sql": "c"})
    with pytest.raises(MigrationError, match=r"0002.*0002_deux.*0002_two"):
        load_migrations(tmp_path)


def test_non_utf8_file_is_refused(tmp_path: Path) -> None:
    write(tmp_path, **{"0001_latin1.sql": "SELECT 'caf\u00e9';".encode("latin-1")})
    with pytest.raises(MigrationError, match=r"0001_latin1\.sql"):
        load_migrations(tmp_path)


def test_checksum_is_sha256_of_the_bytes(tmp_path: Path) -> None:
    write(tmp_path, **{"0001_one.sql": "SELECT 1;\n"})
    (first,) = load_migrations(tmp_path)
    assert first == Migration(
        1, "0001_one", "SELECT 1;\n", hashlib.sha256(b"SELECT 1;\n").hexdigest()
    )
    write(tmp_path, **{"0001_one.sql": "SELECT 1; \n"})
    (changed,) = load_migrations(tmp_path)
    assert changed.checksum != first.checksum
