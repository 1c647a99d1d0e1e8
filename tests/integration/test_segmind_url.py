"""SEGMIND_IMAGE_TRANSPORT=url through the service: the professional tier's image is lent
to the fake Segmind server as a presigned URL of the S3 server, which the fake fetches
over HTTP; the item is done, and the temporary object is gone afterwards."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest

from lumiku_bgremover.contracts import subjects
from lumiku_bgremover.contracts.common import Tier
from lumiku_bgremover.engine_settings import EngineSettings, Route
from lumiku_bgremover.engines.fakes import FakeSegmind
from lumiku_bgremover.settings import S3Settings
from lumiku_bgremover.storage.base import ENGINE_INPUTS_PREFIX
from tests.fixtures.s3 import S3Server
from tests.integration.pipeline_harness import batch_request, photo, service_and_client
from tests.integration.service import FAKE_ROUTES, service_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def segmind() -> Iterator[FakeSegmind]:
    with FakeSegmind() as fake:
        yield fake


async def test_segmind_fetches_a_presigned_url_and_the_lent_object_is_deleted(
    nats_url: str,
    nats_namespace: str,
    migrated_database_url: str,
    s3_settings: S3Settings,
    s3_server: S3Server,
    segmind: FakeSegmind,
) -> None:
    base = service_settings(nats_url, nats_namespace, migrated_database_url, s3_settings)
    routes = dict(FAKE_ROUTES) | {
        Tier.PROFESSIONAL: Route(engine="segmind", model="birefnet-general")
    }
    engines = EngineSettings(
        segmind_api_key="SG_test", segmind_endpoint=segmind.url, routes=routes,
        segmind_image_transport="url",
    )  # fmt: skip
    async with service_and_client(dataclasses.replace(base, engines=engines)) as client:
        await client.grant("lender", 100)
        ref = await client.upload("lender", "photo.png", photo(0))
        request = batch_request("req-url", "lender", [ref], Tier.PROFESSIONAL)
        await client.publish(subjects.BATCH_REQUESTED, request)
        await client.events.wait(lambda events: bool(events.of(subjects.ITEM_DONE)), 60)
        [done] = client.events.of(subjects.ITEM_DONE)
    assert (done["engine"], done["model"]) == ("segmind", "birefnet-general")

    [url] = segmind.fetched
    parts = urlsplit(url)
    assert f"{parts.hostname}:{parts.port}" == s3_settings.endpoint
    assert parts.path.startswith(f"/{s3_settings.bucket}/{ENGINE_INPUTS_PREFIX}")
    assert "X-Amz-Signature" in parse_qs(parts.query)  # presigned, not public
    assert int(parse_qs(parts.query)["X-Amz-Expires"][0]) <= 3600  # short-lived

    s3 = s3_server.client()
    lent = await asyncio.to_thread(
        lambda: list(s3.list_objects(s3_settings.bucket, prefix=ENGINE_INPUTS_PREFIX))
    )
    assert lent == []
    config = await asyncio.to_thread(s3.get_bucket_lifecycle, s3_settings.bucket)
    assert config is not None
    expiring = {r.rule_filter.prefix: r.expiration.days for r in config.rules if r.expiration}
    assert expiring[ENGINE_INPUTS_PREFIX] == 1  # the backstop provisioned at start
