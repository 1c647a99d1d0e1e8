"""Segmind with SEGMIND_IMAGE_TRANSPORT=url: the image lent by presigned URL, then deleted.

The fake Segmind server fetches the URL over HTTP as Segmind does; the store is a local
directory whose "presigned" URLs a small HTTP server on 127.0.0.1 serves (S3 serves
the real ones; the integration test uses an S3 server).
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image, ImageDraw

from lumiku_bgremover.contracts.codes import FailCode
from lumiku_bgremover.contracts.common import Tier
from lumiku_bgremover.engine_settings import EngineSettings, Resilience, Route
from lumiku_bgremover.engines import EngineConfigError, build_router
from lumiku_bgremover.engines.fake import fake_matte
from lumiku_bgremover.engines.fakes import FakeSegmind, Fault
from lumiku_bgremover.engines.hosted import ProviderError
from lumiku_bgremover.engines.links import LinkError, StoreLinker, link_ttl
from lumiku_bgremover.engines.resilience import BreakerState, Resilient
from lumiku_bgremover.engines.segmind import SegmindEngine
from lumiku_bgremover.settings import RetentionSettings
from lumiku_bgremover.storage import LocalObjectStore, StorageError
from lumiku_bgremover.storage.base import ENGINE_INPUTS_PREFIX, validate_key, validate_ttl
from lumiku_bgremover.storage.lifecycle import ExpiryRule, expiry_rules

MODEL = "birefnet-general"


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        del format, args


@pytest.fixture
def files(tmp_path: Path) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 serving `tmp_path` (the local store's root)."""
    handler = functools.partial(_Quiet, directory=str(tmp_path))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class ServedStore(LocalObjectStore):
    """A local store whose presigned URLs are served over HTTP (by `files`)."""

    def __init__(self, root: Path, base_url: str) -> None:
        super().__init__(root, "inputs")
        self.base_url = base_url
        self.fail: set[str] = set()  #: operations that raise StorageError

    async def put_bytes(self, key: str, data: bytes, content_type: str = "image/png") -> Any:
        if "put" in self.fail:
            raise StorageError("S3 SlowDown on put")
        return await super().put_bytes(key, data, content_type)

    async def delete(self, key: str) -> None:
        if "delete" in self.fail:
            raise StorageError("S3 InternalError on delete")
        await super().delete(key)

    async def presigned_get_url(self, key: str, *, ttl_s: int) -> str:
        validate_key(key)
        validate_ttl(ttl_s)
        return f"{self.base_url}/{self.bucket}/{key}"


@pytest.fixture
def store(tmp_path: Path, files: str) -> ServedStore:
    return ServedStore(tmp_path, files)


@pytest.fixture
def segmind() -> Iterator[FakeSegmind]:
    with FakeSegmind() as fake:
        yield fake


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10.0) as http:
        yield http


def engine(client: httpx.AsyncClient, segmind: FakeSegmind, store: Any) -> SegmindEngine:
    links = StoreLinker(store, ttl_s=120)
    return SegmindEngine(client, api_key="SG_test", endpoint=segmind.url, links=links)


def subject() -> Image.Image:
    image = Image.new("RGB", (96, 64), (250, 250, 250))
    ImageDraw.Draw(image).ellipse((20, 10, 76, 54), fill=(30, 90, 200))
    return image


def sent(segmind: FakeSegmind) -> str:
    """The `image` field of the last request the fake Segmind got."""
    value = json.loads(segmind.requests[-1].body)["image"]
    assert isinstance(value, str)
    return value


def lent_objects(root: Path) -> list[Path]:
    folder = root / "inputs" / ENGINE_INPUTS_PREFIX
    return [path for path in folder.rglob("*") if path.is_file()] if folder.exists() else []


async def test_the_image_travels_as_a_url_that_segmind_fetches_then_is_deleted(
    client: httpx.AsyncClient, segmind: FakeSegmind, store: ServedStore, tmp_path: Path
) -> None:
    sg = engine(client, segmind, store)
    assert sg.transport == "url"
    matte = await sg.matte(subject(), model=MODEL)
    assert matte.tobytes() == fake_matte(subject()).tobytes()
    url = sent(segmind)
    assert url.startswith(f"{store.base_url}/inputs/{ENGINE_INPUTS_PREFIX}")
    assert segmind.fetched == [url]
    key = url.removeprefix(f"{store.base_url}/inputs/")
    assert not await store.exists(key)
    assert lent_objects(tmp_path) == []
    assert (await client.get(url)).status_code == 404  # the URL lends nothing any more


async def test_base64_stays_the_default(
    client: httpx.AsyncClient, segmind: FakeSegmind, tmp_path: Path
) -> None:
    sg = SegmindEngine(client, api_key="SG_test", endpoint=segmind.url)
    assert sg.transport == "base64"
    await sg.matte(subject(), model=MODEL)
    assert base64.b64decode(sent(segmind), validate=True).startswith(b"\x89PNG")
    assert segmind.fetched == []
    assert lent_objects(tmp_path) == []


@pytest.mark.parametrize(
    ("fault", "code", "retryable"),
    [
        (Fault.http(500), FailCode.ENGINE_UNAVAILABLE, True),
        (Fault("rate_limited", seconds=5), FailCode.ENGINE_UNAVAILABLE, True),
        (Fault("credits"), FailCode.ENGINE_UNAVAILABLE, True),
        (Fault.http(401), FailCode.ENGINE_UNAVAILABLE, False),
        (Fault("not_a_mask"), FailCode.ENGINE_FAILED, True),
    ],
    ids=["500", "429", "406", "401", "not-a-mask"],
)
async def test_the_lent_image_is_deleted_when_the_call_fails(
    client: httpx.AsyncClient,
    segmind: FakeSegmind,
    store: ServedStore,
    tmp_path: Path,
    fault: Fault,
    code: FailCode,
    retryable: bool,
) -> None:
    segmind.push(fault)
    with pytest.raises(ProviderError) as caught:
        await engine(client, segmind, store).matte(subject(), model=MODEL)
    assert (caught.value.code, caught.value.retryable) == (code, retryable)
    assert sent(segmind).startswith(store.base_url)
    assert lent_objects(tmp_path) == []


async def test_the_lent_image_is_deleted_when_segmind_cannot_be_reached(
    client: httpx.AsyncClient, store: ServedStore, tmp_path: Path
) -> None:
    gone = FakeSegmind().start()
    gone.stop()  # its port is closed: the connection is refused
    with pytest.raises(ProviderError) as caught:
        await engine(client, gone, store).matte(subject(), model=MODEL)
    assert (caught.value.status, caught.value.retryable) == (None, True)
    assert lent_objects(tmp_path) == []


async def test_a_url_segmind_cannot_fetch_is_refused_as_a_bad_image(
    client: httpx.AsyncClient, segmind: FakeSegmind, tmp_path: Path
) -> None:
    local = LocalObjectStore(tmp_path, "inputs")  # its URLs are file://: no provider can fetch
    with pytest.raises(ProviderError) as caught:
        await engine(client, segmind, local).matte(subject(), model=MODEL)
    assert caught.value.status == 400
    assert (caught.value.code, caught.value.retryable) == (FailCode.ENGINE_FAILED, False)
    assert "could not fetch the image URL" in str(caught.value)
    [url] = segmind.fetched
    assert url.startswith("file://")
    assert lent_objects(tmp_path) == []


async def test_a_url_answering_404_is_refused_as_a_bad_image(
    client: httpx.AsyncClient, segmind: FakeSegmind, store: ServedStore, tmp_path: Path
) -> None:
    class Elsewhere(ServedStore):
        async def presigned_get_url(self, key: str, *, ttl_s: int) -> str:
            return f"{self.base_url}/inputs/not-{key.rsplit('/', 1)[-1]}"

    with pytest.raises(ProviderError) as caught:
        await engine(client, segmind, Elsewhere(tmp_path, store.base_url)).matte(
            subject(), model=MODEL
        )
    assert (caught.value.status, caught.value.retryable) == (400, False)
    assert "answered 404" in str(caught.value)
    assert lent_objects(tmp_path) == []


async def test_store_trouble_is_retryable_and_sends_nothing(
    client: httpx.AsyncClient, segmind: FakeSegmind, store: ServedStore
) -> None:
    store.fail.add("put")
    with pytest.raises(LinkError) as caught:
        await engine(client, segmind, store).matte(subject(), model=MODEL)
    assert (caught.value.code, caught.value.retryable) == (FailCode.ENGINE_UNAVAILABLE, True)
    assert segmind.requests == []


async def test_a_failed_delete_is_logged_and_the_matte_kept(
    client: httpx.AsyncClient,
    segmind: FakeSegmind,
    store: ServedStore,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store.fail.add("delete")
    with caplog.at_level(logging.WARNING, logger="lumiku_bgremover.engines.links"):
        matte = await engine(client, segmind, store).matte(subject(), model=MODEL)
    assert matte.tobytes() == fake_matte(subject()).tobytes()
    assert "could not delete the engine input engine-inputs/" in caplog.text
    assert len(lent_objects(tmp_path)) == 1  # left to the lifecycle rule


async def test_url_mode_needs_a_linker_and_gets_it_from_the_router(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    route = {tier: Route(engine="segmind", model=MODEL) for tier in Tier}
    settings = EngineSettings(
        segmind_api_key="SG_test", routes=route, segmind_image_transport="url"
    )
    with pytest.raises(EngineConfigError, match="SEGMIND_IMAGE_TRANSPORT=url"):
        build_router(settings, client=client)
    links = StoreLinker(LocalObjectStore(tmp_path, "inputs"), ttl_s=60)
    router = build_router(settings, client=client, links=links)
    segmind = router.engines["segmind"]
    assert isinstance(segmind, SegmindEngine)
    assert segmind.transport == "url"
    plain = EngineSettings(segmind_api_key="SG_test", routes=route)
    base64_router = build_router(plain, client=client, links=links)
    assert getattr(base64_router.engines["segmind"], "transport", None) == "base64"


def test_the_url_outlives_the_engine_timeout() -> None:
    assert link_ttl(60.0) == 120
    assert link_ttl(0.5) == 61


def test_a_lifecycle_rule_backs_the_engine_inputs_whatever_the_retention() -> None:
    assert expiry_rules(RetentionSettings()) == (ExpiryRule(ENGINE_INPUTS_PREFIX, 1),)
    rules = expiry_rules(RetentionSettings(results_days=30))
    assert rules == (ExpiryRule("results/", 30), ExpiryRule(ENGINE_INPUTS_PREFIX, 1))
    assert rules[-1].rule_id == "lumiku-bgremover-expire-engine-inputs"


async def test_store_trouble_never_opens_segminds_breaker(
    client: httpx.AsyncClient, segmind: FakeSegmind, store: ServedStore
) -> None:
    policy = Resilience(attempts=1, breaker_failures=2)
    resilient = Resilient(engine(client, segmind, store), policy, timeout_s=10.0, clock=lambda: 0.0)
    store.fail.add("put")
    for _ in range(3):  # more failures than the breaker's threshold, all of them ours
        with pytest.raises(LinkError):
            await resilient.call(subject(), MODEL)
    assert resilient.breaker.state is BreakerState.CLOSED
    store.fail.clear()
    assert (await resilient.call(subject(), MODEL)).attempts == 1
    segmind.push(Fault.http(500), Fault.http(500))
    for _ in range(2):  # Segmind's own failures still count
        with pytest.raises(ProviderError):
            await resilient.call(subject(), MODEL)
    assert resilient.breaker.state is BreakerState.OPEN
