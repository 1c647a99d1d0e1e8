"""The hosted-fake scenario the demo shows: routing, retries, the breaker, the fallback."""

from __future__ import annotations

import pytest
from PIL import Image

from lumiku_bgremover.contracts.common import Tier
from lumiku_bgremover.engine_settings import EngineSettings
from lumiku_bgremover.engines.fakes.scenario import hosted_fakes
from lumiku_bgremover.engines.resilience import BreakerState
from lumiku_bgremover.engines.router import build_router


def photo(index: int) -> Image.Image:
    return Image.new("RGB", (48, 32), (40 * index, 200, 90))


@pytest.mark.parametrize(
    ("tier", "primary", "fallback"),
    [(Tier.BASIC, "huggingface", "segmind"), (Tier.PROFESSIONAL, "segmind", "huggingface")],
)
async def test_retries_ride_out_then_the_breaker_opens_and_the_fallback_serves(
    tier: Tier, primary: str, fallback: str
) -> None:
    with hosted_fakes() as fakes:
        settings = fakes.settings(EngineSettings())
        described = fakes.script(tier, delay_s=0.05)
        router = build_router(settings)
        try:
            calls = [await router.matte(tier, photo(i)) for i in range(5)]
            state = router.breaker(primary).breaker.state
        finally:
            await router.aclose()
        summary = fakes.summary()
    assert described[0].startswith(f"scripted on {primary}: 503 model loading (0.05 s)")
    first = calls[0]
    assert (first.engine, first.attempts, first.fallback) == (primary, 3, False)
    assert [c.engine for c in calls[1:]] == [fallback] * 4
    assert all(c.fallback for c in calls[1:])
    assert state is BreakerState.OPEN
    served = fakes.primary(tier).requests
    assert len(served) == 3 + settings.resilience.breaker_failures  # then no more calls
    assert summary[0].startswith("fake huggingface: ")
    assert all(c.matte.size == (48, 32) for c in calls)
