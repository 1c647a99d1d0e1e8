"""Hub downloads against a scripted HTTP server on 127.0.0.1: hashes, caps, faults, locking."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lumiku_bgremover.engine_settings import ModelSource
from lumiku_bgremover.engines import weights
from lumiku_bgremover.engines.hub import HubLimits, advertised_sha256, download
from lumiku_bgremover.engines.local import hub_downloader
from lumiku_bgremover.engines.weights import (
    WeightsFetchError,
    WeightsIntegrityError,
    digest_file,
    resolve_weights,
)
from tests.fixtures.hub import DIGEST, PAYLOAD, Hub, Route, serving

OTHER = hashlib.sha256(b"something else").hexdigest()


@pytest.fixture
def hub() -> Iterator[Hub]:
    with serving() as server:
        yield server


@pytest.fixture(autouse=True)
def fresh_memo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(weights, "_verified", {})


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.suffix in {".part", ".onnx"})


# --- the pure part: which sha256 does the hub advertise? ---------------------------------


def response(**headers: str) -> httpx.Response:
    return httpx.Response(200, headers=headers)


@pytest.mark.parametrize(
    ("chain", "expected"),
    [
        ([response(**{"X-Linked-Etag": f'"{DIGEST}"'})], DIGEST),
        ([response(ETag=f'"{DIGEST.upper()}"')], DIGEST),
        ([response(ETag=f'W/"{DIGEST}"')], DIGEST),
        ([response(ETag='"9eb98c817f04b051b3bcca591bcd4e03cec88018"')], None),  # a git blob id
        ([response(ETag='"7a35a0141cbbc80de11d9c9a28f52697"')], None),  # an S3 MD5
        ([response(**{"X-Linked-Etag": f'"{DIGEST}"', "ETag": '"abc"'}),
          response(ETag='"d41d8cd98f00b204e9800998ecf8427e"')], DIGEST),  # redirect, then CDN
        ([response(), response(ETag=f'"{OTHER}"')], None),  # only the first answer's ETag counts
        ([response()], None),
        ([], None),
    ],
)  # fmt: skip
def test_advertised_sha256(chain: list[httpx.Response], expected: str | None) -> None:
    assert advertised_sha256(chain) == expected


# --- download ----------------------------------------------------------------------------


def test_a_pinned_file_downloads_and_lands_in_place(hub: Hub, tmp_path: Path) -> None:
    hub.routes["/m.onnx"] = Route()
    done = download(hub.url("/m.onnx"), tmp_path / "m.onnx", pinned=DIGEST)
    assert (done.sha256, done.size, done.verified_by) == (DIGEST, len(PAYLOAD), "pin")
    assert (tmp_path / "m.onnx").read_bytes() == PAYLOAD
    assert leftovers(tmp_path) == ["m.onnx"]


def test_the_hub_sha256_on_a_redirect_is_checked(hub: Hub, tmp_path: Path) -> None:
    hub.routes["/resolve/m.onnx"] = Route(
        302, b"", {"Location": hub.url("/cdn/m.onnx"), "X-Linked-Etag": f'"{DIGEST}"'}
    )
    hub.routes["/cdn/m.onnx"] = Route(headers={"ETag": '"d41d8cd98f00b204e9800998ecf8427e"'})
    done = download(hub.url("/resolve/m.onnx"), tmp_path / "m.onnx", pinned=None)
    assert (done.sha256, done.verified_by) == (DIGEST, "hub")


def test_a_wrong_hash_caches_nothing(hub: Hub, tmp_path: Path) -> None:
    hub.routes["/m.onnx"] = Route()
    with pytest.raises(WeightsIntegrityError, match=f"expected {OTHER}"):
        download(hub.url("/m.onnx"), tmp_path / "m.onnx", pinned=OTHER)
    assert leftovers(tmp_path) == []


def test_a_wrong_hub_hash_caches_nothing(hub: Hub, tmp_path: Path) -> None:
    hub.routes["/m.onnx"] = Route(headers={"X-Linked-Etag": f'"{OTHER}"'})
    with pytest.raises(WeightsIntegrityError, match=r"\(hub\)"):
        download(hub.url("/m.onnx"), tmp_path / "m.onnx", pinned=None)
    assert leftovers(tmp_path) == []


def test_a_truncated_body_is_a_retryable_fetch_error(hub: Hub, tmp_path: Path) -> None:
    hub.routes["/m.onnx"] = Route(body=PAYLOAD[:100_000], declared=len(PAYLOAD))
    with pytest.raises(WeightsFetchError) as info:
        download(hub.url("/m.onnx"), tmp_path / "m.onnx", pinned=DIGEST)
    assert info.value.retryable
    assert leftovers(tmp_path) == []


def test_not_found_names_the_setting_and_is_not_retried(hub: Hub, tmp_path: Path) -> None:
    with pytest.raises(WeightsFetchError, match="MODEL_SOURCES") as info:
        download(hub.url("/missing.onnx"), tmp_path / "m.onnx", pinned=DIGEST)
    assert not info.value.retryable
    assert leftovers(tmp_path) == []


def test_a_server_error_is_retryable(hub: Hub, tmp_path: Path) -> None:
    hub.routes["/m.onnx"] = Route(503, b"busy")
    with pytest.raises(WeightsFetchError, match="503") as info:
        download(hub.url("/m.onnx"), tmp_path / "m.onnx", pinned=DIGEST)
    assert info.value.retryable


def test_no_hash_anywhere_is_refused_unless_trusted(hub: Hub, tmp_path: Path) -> None:
    hub.routes["/m.onnx"] = Route()
    with pytest.raises(WeightsIntegrityError, match="--trust-unpinned"):
        download(hub.url("/m.onnx"), tmp_path / "m.onnx", pinned=None)
    assert leftovers(tmp_path) == []
    done = download(hub.url("/m.onnx"), tmp_path / "m.onnx", pinned=None, trust_unpinned=True)
    assert (done.sha256, done.verified_by) == (DIGEST, "unpinned")


def test_the_size_cap_holds_with_and_without_a_length(hub: Hub, tmp_path: Path) -> None:
    hub.routes["/m.onnx"] = Route()
    small = HubLimits(max_bytes=len(PAYLOAD) - 1)
    with pytest.raises(WeightsIntegrityError, match="over the cap"):
        download(hub.url("/m.onnx"), tmp_path / "m.onnx", pinned=DIGEST, limits=small)
    hub.routes["/chunked.onnx"] = Route(declared=-1)  # no Content-Length to refuse early
    with pytest.raises(WeightsIntegrityError, match="sent over"):
        download(hub.url("/chunked.onnx"), tmp_path / "m.onnx", pinned=DIGEST, limits=small)
    done = download(hub.url("/chunked.onnx"), tmp_path / "m.onnx", pinned=DIGEST)
    assert done.size == len(PAYLOAD)
    (tmp_path / "m.onnx").unlink()
    assert leftovers(tmp_path) == []


def test_a_stalled_server_times_out(hub: Hub, tmp_path: Path) -> None:
    hub.routes["/m.onnx"] = Route(hold=threading.Event())
    quick = HubLimits(connect_s=1.0, read_s=0.2)
    with pytest.raises(WeightsFetchError, match="timed out") as info:
        download(hub.url("/m.onnx"), tmp_path / "m.onnx", pinned=DIGEST, limits=quick)
    assert info.value.retryable


# --- through resolve_weights: the lock, the cache, the recorded digest --------------------


def test_two_threads_download_once(hub: Hub, tmp_path: Path) -> None:
    gate = threading.Event()
    hub.routes["/m.onnx"] = Route(hold=gate)
    source, fetch = ModelSource(hub.url("/m.onnx"), DIGEST), hub_downloader()
    results: list[Path] = []
    errors: list[BaseException] = []

    def resolve() -> None:
        try:
            results.append(resolve_weights("u2net", tmp_path, source=source, downloader=fetch))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=resolve) for _ in range(2)]
    for thread in threads:
        thread.start()
    # Without the lock the second thread would ask too while the first one's answer is held.
    assert not hub.repeated.wait(1.0), "both threads downloaded"
    gate.set()
    for thread in threads:
        thread.join(10)
    assert errors == []
    assert hub.gets == {"/m.onnx": 1}
    assert [p.read_bytes() == PAYLOAD for p in results] == [True, True]


def test_the_cache_is_reused_and_reverified_by_a_new_process(
    hub: Hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.routes["/m.onnx"] = Route(headers={"X-Linked-Etag": f'"{DIGEST}"'})
    source, fetch = ModelSource(hub.url("/m.onnx")), hub_downloader()
    path = resolve_weights("rmbg-1.4", tmp_path, source=source, downloader=fetch)
    assert digest_file(path).read_text().strip() == DIGEST
    monkeypatch.setattr(weights, "_verified", {})  # as a new process would start
    assert resolve_weights("rmbg-1.4", tmp_path, source=source, downloader=fetch) == path
    assert hub.gets == {"/m.onnx": 1}
    path.write_bytes(b"corrupted")
    monkeypatch.setattr(weights, "_verified", {})
    resolve_weights("rmbg-1.4", tmp_path, source=source, downloader=fetch)
    assert hub.gets == {"/m.onnx": 2}
    assert path.read_bytes() == PAYLOAD


def test_a_placed_file_without_a_known_hash_is_used_as_is(hub: Hub, tmp_path: Path) -> None:
    (tmp_path / "u2net.onnx").write_bytes(b"placed by hand")
    source = ModelSource(hub.url("/m.onnx"))
    path = resolve_weights("u2net", tmp_path, source=source, downloader=hub_downloader())
    assert path.read_bytes() == b"placed by hand"
    assert hub.gets == {}


def test_a_changed_pin_downloads_again(hub: Hub, tmp_path: Path) -> None:
    (tmp_path / "u2net.onnx").write_bytes(b"an older version")
    hub.routes["/m.onnx"] = Route()
    source = ModelSource(hub.url("/m.onnx"), DIGEST)
    resolve_weights("u2net", tmp_path, source=source, downloader=hub_downloader())
    assert (tmp_path / "u2net.onnx").read_bytes() == PAYLOAD
    assert hub.gets == {"/m.onnx": 1}
