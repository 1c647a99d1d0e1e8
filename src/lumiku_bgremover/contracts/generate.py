"""Write, or check, the generated files under `contracts/`.

    python -m lumiku_bgremover.contracts.generate [--root DIR]          # write
    python -m lumiku_bgremover.contracts.generate [--root DIR] --check  # exit 1 if stale

Schemas, `asyncapi.yaml` and `README.md` are generated, and so is
`docs/nats-permissions.md`; examples are hand-written and never touched.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from lumiku_bgremover.contracts import documents
from lumiku_bgremover.contracts.readme import readme_text
from lumiku_bgremover.contracts.subjects import message_types
from lumiku_bgremover.permissions_page import PAGE_PATH, permissions_page


def generated_files() -> dict[str, str]:
    """Every generated file's text, by path relative to the repository root."""
    files = {documents.schema_path(kind): documents.schema_text(kind) for kind in message_types()}
    files[documents.ASYNCAPI_PATH] = documents.asyncapi_text()
    files[documents.README_PATH] = readme_text()
    files[PAGE_PATH] = permissions_page()
    return files


def _orphans(root: Path, files: dict[str, str]) -> list[str]:
    schema_dir = root / documents.SCHEMA_DIR
    on_disk = sorted(schema_dir.glob("*.json")) if schema_dir.is_dir() else []
    return [rel for rel in (p.relative_to(root).as_posix() for p in on_disk) if rel not in files]


def stale_files(root: Path) -> list[str]:
    """Generated files that are missing or differ, and schema files no message has."""
    files = generated_files()
    stale = [
        rel
        for rel, text in files.items()
        if not (root / rel).is_file() or (root / rel).read_text(encoding="utf-8") != text
    ]
    return stale + _orphans(root, files)


def write_files(root: Path) -> list[str]:
    """Write what changed, delete orphan schemas; returns the paths touched."""
    files = generated_files()
    touched = []
    for rel in stale_files(root):
        path = root / rel
        if rel in files:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(files[rel], encoding="utf-8", newline="\n")
        else:
            path.unlink()
        touched.append(rel)
    return touched


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m lumiku_bgremover.contracts.generate")
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="repository root")
    parser.add_argument("--check", action="store_true", help="exit 1 when files are stale")
    args = parser.parse_args(argv)
    root: Path = args.root
    if args.check:
        stale = stale_files(root)
        for rel in stale:
            sys.stderr.write(f"stale: {rel}\n")
        if stale:
            sys.stderr.write("run `make contracts` to regenerate\n")
        return 1 if stale else 0
    for rel in write_files(root):
        sys.stdout.write(f"updated {rel}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
