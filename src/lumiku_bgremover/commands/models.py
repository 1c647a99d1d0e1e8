"""`lumiku-bgremover models list|fetch`: the local engine's models, their weights and licences."""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lumiku_bgremover.commands.common import EXIT_FAILED, EXIT_OK, say, shout
from lumiku_bgremover.engine_settings import EngineSettings
from lumiku_bgremover.engines.catalogue import ModelEntry, catalogue
from lumiku_bgremover.engines.hub import HubLimits
from lumiku_bgremover.engines.local import (
    MODEL_SPECS,
    ModelSpec,
    hub_downloader,
    weights_locator,
)
from lumiku_bgremover.engines.weights import WeightsUnavailable
from lumiku_bgremover.settings import Settings

__all__ = ["ModelRow", "add_arguments", "model_rows", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`list [--json]` | `fetch NAME [NAME...] [--trust-unpinned]`."""
    actions = parser.add_subparsers(dest="models_action", required=True)
    listing = actions.add_parser("list", help="each model: spec, source, pin, cache, licence")
    listing.add_argument("--json", action="store_true", help="print JSON")
    fetch = actions.add_parser("fetch", help="download and verify weights into MODEL_CACHE_DIR")
    fetch.add_argument("names", metavar="NAME", nargs="+", help="model names (see `models list`)")
    fetch.add_argument(
        "--trust-unpinned",
        action="store_true",
        help="accept weights that neither a pin nor the hub's sha256 can check",
    )


@dataclass(frozen=True, slots=True)
class ModelRow:
    """One line of `models list`."""

    spec: ModelSpec
    entry: ModelEntry
    cached: Path | None

    def as_json(self) -> dict[str, Any]:
        """The row as plain JSON values."""
        return {
            "name": self.spec.name, "input_size": self.spec.size, "mean": list(self.spec.mean),
            "std": list(self.spec.std), "output": self.spec.output, "source": self.entry.source,
            "url": self.entry.url, "sha256": self.entry.sha256, "size": self.entry.size,
            "cached": str(self.cached) if self.cached else None, "licence": self.entry.licence,
        }  # fmt: skip

    def text(self) -> str:
        """`name  spec  source  pin  cache  licence`, the columns padded."""
        spec = f"{self.spec.size}px {_norm(self.spec)} {self.spec.output}"
        pin = f"sha256 {self.entry.sha256[:12]}" if self.entry.sha256 else "not pinned"
        cached = "cached" if self.cached else "not cached"
        return (f"{self.spec.name:<13} {spec:<27} {self.entry.source:<7} {pin:<20} "
                f"{cached:<11} {self.entry.licence}")  # fmt: skip


def _norm(spec: ModelSpec) -> str:
    return "imagenet" if spec.mean[0] != 0.5 else "mean0.5"  # noqa: PLR2004 - the two families


def model_rows(settings: EngineSettings) -> list[ModelRow]:
    """Every local model with its weights' entry and whether its file is cached."""
    entries = catalogue(MODEL_SPECS, settings.model_sources)
    rows = []
    for name, entry in entries.items():
        path = settings.model_cache_dir / f"{name}.onnx"
        rows.append(ModelRow(MODEL_SPECS[name], entry, path if path.is_file() else None))
    return rows


async def run(settings: Settings, args: argparse.Namespace) -> int:
    """`list` prints the catalogue; `fetch` gets each named model (1 when any failed)."""
    if args.models_action == "list":
        rows = model_rows(settings.engines)
        if args.json:
            say(json.dumps([row.as_json() for row in rows], indent=2))
        else:
            say(f"models in {settings.engines.model_cache_dir}:")
            say("\n".join(row.text() for row in rows))
        return EXIT_OK
    return await _fetch(settings.engines, args.names, trust_unpinned=args.trust_unpinned)


async def _fetch(engines: EngineSettings, names: list[str], *, trust_unpinned: bool) -> int:
    unknown = [name for name in names if name not in MODEL_SPECS]
    if unknown:
        shout(f"models fetch: unknown model(s) {', '.join(unknown)}; "
              f"known: {', '.join(sorted(MODEL_SPECS))} (see `models list`)")  # fmt: skip
        return EXIT_FAILED
    limits = HubLimits(max_bytes=engines.model_download_max_bytes)
    trust = trust_unpinned or engines.model_trust_unpinned
    locate = weights_locator(
        engines.model_cache_dir, sources=engines.model_sources,
        downloader=hub_downloader(trust_unpinned=trust, limits=limits),
    )  # fmt: skip
    failed = 0
    for name in names:
        try:
            path = await asyncio.to_thread(locate, name)
        except WeightsUnavailable as error:
            shout(f"models fetch {name}: failed: {error}")
            failed += 1
        else:
            say(f"{name}: {path} ({path.stat().st_size} bytes, verified)")
    return EXIT_FAILED if failed else EXIT_OK
