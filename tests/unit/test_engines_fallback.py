"""A breaker opened by repeated 503s sends items to the fallback engine, then closes.

Real sockets: the router's Segmind engine talks to the fake Segmind server; the
clock is injected, so the cool-down passes without sleeping.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import pytest
from PIL import Image, ImageDraw

from lumiku_bgremover.contracts.common import Tier
from lumiku_bgremover.engine_settings import EngineSettings, Resilience, Route
from lumiku_bgremover.engines import EngineError, FakeEngine, build_router
from lumiku_bgremover.engines.fakes import FakeSegmind, Fault
from lumiku_bgremover.engines.resilience import BreakerState

ROUTES = {tier: Route(engine="fake", model="plumbing") for tier in Tier} | {
    Tier.PROFESSIONAL: Route(engine="segmind", model="birefnet-general")
}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def server() -> AsyncIterator[FakeSegmind]:
    with FakeSegmind() as fake:
        yield fake


def photo(index: int) -> Image.Image:
    image = Image.new("RGB", (40, 30), (255, 255, 255))
    ImageDraw.Draw(image).rectangle((5 + index, 5, 30, 25), fill=(200, 40, 40))
    return image


async def test_breaker_sends_items_to_the_fallback_then_closes(server: FakeSegmind) -> None:
    clock = Clock()
    settings = EngineSettings(
        segmind_api_key="SG_test", segmind_endpoint=server.url, routes=dict(ROUTES),
        fallbacks={Tier.PROFESSIONAL: Route(engine="fake", model="fallback")},
        resilience=Resilience(attempts=1, breaker_failures=3, breaker_cooldown_s=30.0),
    )  # fmt: skip
    async with httpx.AsyncClient() as client:
        router = build_router(settings, client=client, clock=clock, fake=FakeEngine())
        breaker = router.breaker("segmind").breaker
        server.push(*[Fault.http(503)] * 3)

        for index in range(3):  # three 503s: each item falls back, the third opens the breaker
            call = await router.matte(Tier.PROFESSIONAL, photo(index))
            assert (call.engine, call.model, call.fallback) == ("fake", "fallback", True)
            assert call.cost_idr == Decimal(0)
        assert breaker.state is BreakerState.OPEN
        assert len(server.requests) == 3

        call = await router.matte(Tier.PROFESSIONAL, photo(3))  # open: no request at all
        assert (call.engine, call.fallback) == ("fake", True)
        assert len(server.requests) == 3

        clock.now += 29.0
        assert (await router.matte(Tier.PROFESSIONAL, photo(4))).fallback
        assert len(server.requests) == 3

        clock.now += 1.0  # the cool-down is over: one probe goes to Segmind, which is well
        call = await router.matte(Tier.PROFESSIONAL, photo(5))
        assert (call.engine, call.provider, call.model) == (
            "segmind",
            "segmind",
            "birefnet-general",
        )
        assert (call.fallback, call.cost_idr) == (False, Decimal("86.25"))
        assert breaker.state is BreakerState.CLOSED
        assert len(server.requests) == 4

        call = await router.matte(Tier.PROFESSIONAL, photo(6))
        assert (call.engine, call.fallback, len(server.requests)) == ("segmind", False, 5)


async def test_without_a_fallback_an_open_breaker_fails_fast_and_retryably(
    server: FakeSegmind,
) -> None:
    clock = Clock()
    settings = EngineSettings(
        segmind_api_key="SG_test", segmind_endpoint=server.url, routes=dict(ROUTES),
        resilience=Resilience(attempts=1, breaker_failures=2, breaker_cooldown_s=10.0),
    )  # fmt: skip
    async with httpx.AsyncClient() as client:
        router = build_router(settings, client=client, clock=clock)
        server.push(Fault.http(503), Fault.http(503))
        for _ in range(2):
            with pytest.raises(EngineError):
                await router.matte(Tier.PROFESSIONAL, photo(0))
        with pytest.raises(EngineError, match="circuit breaker is open") as caught:
            await router.matte(Tier.PROFESSIONAL, photo(0))
        assert caught.value.retryable  # the work queue NAKs the item and tries again later
        assert len(server.requests) == 2


async def test_when_the_fallback_fails_too_the_error_is_retryable_if_either_was(
    server: FakeSegmind,
) -> None:
    settings = EngineSettings(
        segmind_api_key="SG_test", segmind_endpoint=server.url, routes=dict(ROUTES),
        fallbacks={Tier.PROFESSIONAL: Route(engine="fake", model="fallback")},
        resilience=Resilience(attempts=1),
    )  # fmt: skip
    async with httpx.AsyncClient() as client:
        router = build_router(
            settings, client=client, fake=FakeEngine(failure_rate=1.0, retryable=False)
        )
        server.push(Fault.http(502))
        with pytest.raises(EngineError, match="fallback fake:fallback failed too") as caught:
            await router.matte(Tier.PROFESSIONAL, photo(0))
    assert caught.value.retryable
