"""The halo measure through the service: a known cut-out shot on green, removed by a
hosted engine (the fake Segmind server answering with the cut-out's true alpha), read
back from S3, its edge colours compared with the known foreground.

Without the foreground estimate a cut-out keeps the shot's pixels at its soft edge
(`compose(..., edge_colour=False)` leaves them as they are), so the error "without"
is the shot's own; "with" is the service's result. Both are the mean absolute colour
error (0..255, over channels) where 0.05 < alpha < 0.95. The same run checks what the
item records of its engine call: provider, model, latency and cost.
"""

from __future__ import annotations

import dataclasses
import io
import logging
from collections.abc import Iterator
from decimal import Decimal

import numpy as np
import pytest
from PIL import Image

from lumiku_bgremover.contracts import subjects
from lumiku_bgremover.contracts.common import Tier
from lumiku_bgremover.db import connect
from lumiku_bgremover.engine_settings import EngineSettings, Route
from lumiku_bgremover.engines.fakes import FakeSegmind
from lumiku_bgremover.settings import S3Settings
from tests.integration.pipeline_harness import batch_request, service_and_client
from tests.integration.service import FAKE_ROUTES, service_settings
from tests.unit.test_matting import edge_error, known_cut_out, on_green

pytestmark = pytest.mark.integration

log = logging.getLogger(__name__)
#: The spec's professional route: Segmind's BiRefNet.
PROFESSIONAL = Route(engine="segmind", model="birefnet-general")


@pytest.fixture
def segmind() -> Iterator[FakeSegmind]:
    _, alpha = known_cut_out()
    true_alpha = Image.fromarray(np.clip(alpha * 255 + 0.5, 0, 255).astype(np.uint8))

    def matter(image: Image.Image) -> Image.Image:
        assert image.size == true_alpha.size, "the service sent the image at its own size"
        return true_alpha

    with FakeSegmind(matter=matter) as fake:
        yield fake


async def test_the_service_removes_the_green_fringe_and_records_the_engine_call(
    nats_url: str,
    nats_namespace: str,
    migrated_database_url: str,
    s3_settings: S3Settings,
    segmind: FakeSegmind,
) -> None:
    base = service_settings(nats_url, nats_namespace, migrated_database_url, s3_settings)
    routes = dict(FAKE_ROUTES) | {Tier.PROFESSIONAL: PROFESSIONAL}
    engines = EngineSettings(segmind_api_key="SG_test", segmind_endpoint=segmind.url, routes=routes)
    fore, alpha = known_cut_out()
    shot = on_green(fore, alpha)
    async with service_and_client(dataclasses.replace(base, engines=engines)) as client:
        await client.grant("halo", 100)
        ref = await client.upload("halo", "on-green.png", shot)
        request = batch_request("req-halo", "halo", [ref], Tier.PROFESSIONAL)
        await client.publish(subjects.BATCH_REQUESTED, request)
        await client.events.wait(lambda events: bool(events.of(subjects.ITEM_DONE)), 60)
        [done] = client.events.of(subjects.ITEM_DONE)
        result = await client.store.get_bytes(done["result"]["key"], max_bytes=10_000_000)
        async with connect(migrated_database_url) as conn:
            row = await conn.fetchrow(
                "SELECT engine, provider, model, engine_ms, cost_idr, engine_attempts, "
                "engine_fallback FROM batch_items WHERE batch_id = $1",
                done["batch_id"],
            )

    out_alpha = np.asarray(Image.open(io.BytesIO(result)).getchannel("A"), dtype=np.int16)
    assert np.abs(out_alpha - np.round(alpha * 255)).max() <= 1, "the provider's matte is kept"
    without, with_estimate = edge_error(shot, fore, alpha), edge_error(result, fore, alpha)
    log.warning("through the service, edge colour error at 0.05<alpha<0.95: "
                "without %.2f, with %.2f (of 255)", without, with_estimate)  # fmt: skip
    assert with_estimate < 0.6 * without  # measured: 65.7 without, 31.7 with

    assert (done["engine"], done["model"]) == ("segmind", "birefnet-general")
    assert row is not None
    assert (row["engine"], row["provider"], row["model"]) == (
        "segmind", "segmind", "birefnet-general",
    )  # fmt: skip
    assert (row["cost_idr"], row["engine_attempts"], row["engine_fallback"]) == (
        Decimal("86.25"), 1, False,
    )  # fmt: skip
    assert row["engine_ms"] is not None
    assert row["engine_ms"] >= 0
    assert len(segmind.requests) == 1
