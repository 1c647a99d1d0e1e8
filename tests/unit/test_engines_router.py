"""Tier routing and the engine errors' contract."""

from __future__ import annotations

import logging
from decimal import Decimal
from pathlib import Path

import pytest
from PIL import Image

from lumiku_bgremover.contracts.codes import FailCode
from lumiku_bgremover.contracts.common import Tier
from lumiku_bgremover.engines import (
    Engine,
    EngineCall,
    EngineConfigError,
    EngineError,
    EngineRouter,
    FakeEngine,
    ModelNotFound,
    UnavailableEngine,
    build_router,
)
from lumiku_bgremover.engines.base import check_matte
from lumiku_bgremover.engines.huggingface import HuggingFaceEngine
from lumiku_bgremover.engines.local import OnnxEngine
from lumiku_bgremover.engines.router import TierEngine, warm_up
from lumiku_bgremover.engines.segmind import SegmindEngine
from lumiku_bgremover.settings import (
    DEFAULT_ROUTES,
    EngineSettings,
    Route,
    Settings,
    SettingsError,
)

ALL_FAKE = {tier: Route(engine="fake", model=f"m-{tier.value}") for tier in Tier}


def settings(routes: dict[Tier, Route], cache: Path | None = None) -> EngineSettings:
    if cache is None:
        return EngineSettings(routes=routes)
    return EngineSettings(routes=routes, model_cache_dir=cache)


class Catalogue:
    """An engine that knows a fixed set of models."""

    name = "local"
    models = ("isnet-medium",)

    async def matte(self, image: Image.Image, *, model: str) -> Image.Image:
        return Image.new("L", image.size)


def test_routes_each_tier_to_its_engine_and_model() -> None:
    fake = FakeEngine(seed=9)
    router = build_router(settings(ALL_FAKE), fake=fake)
    for tier in Tier:
        engine, model = router.for_tier(tier)
        assert isinstance(engine, TierEngine)
        assert engine.name == "fake"
        assert model == f"m-{tier.value}"
    assert router.engines == {"fake": fake}


async def test_for_tier_still_gives_a_working_engine() -> None:
    router = build_router(settings(ALL_FAKE))
    engine, model = router.for_tier(Tier.BASIC)
    image = Image.new("RGB", (8, 6), (255, 255, 255))
    matte = await engine.matte(image, model=model)
    assert (matte.mode, matte.size) == ("L", (8, 6))


def test_mixed_routes() -> None:
    routes = dict(ALL_FAKE) | {Tier.INDUSTRY: Route(engine="local", model="isnet-medium")}
    local = Catalogue()
    router = build_router(settings(routes), local=local)
    assert router.for_tier(Tier.INDUSTRY)[1] == "isnet-medium"
    assert router.engines["local"] is local
    assert router.for_tier(Tier.BASIC)[0].name == "fake"
    assert set(router.engines) == {"fake", "local"}
    assert router.routes == routes


def test_a_default_fake_engine_is_built_when_none_is_given() -> None:
    assert isinstance(build_router(settings(ALL_FAKE)).engines["fake"], FakeEngine)


def test_a_default_local_engine_is_built_lazily(tmp_path: Path) -> None:
    routes = {tier: Route(engine="local", model="isnet-medium") for tier in Tier}
    cache = tmp_path / "models"
    router = build_router(settings(routes, cache))
    assert isinstance(router.engines["local"], OnnxEngine)
    assert router.for_tier(Tier.PROFESSIONAL)[1] == "isnet-medium"
    assert not cache.exists()  # nothing fetched at construction


def test_without_keys_every_tier_runs_locally_and_the_log_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="lumiku_bgremover.engines.router")
    router = build_router(EngineSettings(), local=Catalogue())  # the defaults: hosted, no keys
    assert router.routes == {t: Route(engine="local", model="isnet-medium") for t in Tier}
    assert set(router.engines) == {"local"}
    warning = next(r.message for r in caplog.records if r.levelno == logging.WARNING)
    assert "no API key for huggingface, segmind" in warning
    assert "basic, standard, professional, industry run on the local engine" in warning


async def test_with_keys_the_spec_routing_starts() -> None:
    engines = Settings.from_env({"HF_TOKEN": "hf_x", "SEGMIND_API_KEY": "SG_y"}).engines
    router = build_router(engines)
    try:
        assert router.routes == DEFAULT_ROUTES
        assert isinstance(router.engines["huggingface"], HuggingFaceEngine)
        assert isinstance(router.engines["segmind"], SegmindEngine)
    finally:
        await router.aclose()


async def test_one_key_only_reroutes_the_other_engines_tiers() -> None:
    router = build_router(EngineSettings(segmind_api_key="SG_y"), local=Catalogue())
    try:
        assert router.routes[Tier.PROFESSIONAL] == DEFAULT_ROUTES[Tier.PROFESSIONAL]
        assert router.routes[Tier.BASIC] == Route(engine="local", model="isnet-medium")
    finally:
        await router.aclose()


def test_hosted_engines_without_keys_can_refuse_to_start() -> None:
    with pytest.raises(EngineConfigError) as caught:
        build_router(EngineSettings(keyless="error"))
    message = str(caught.value)
    assert message.startswith("TIER_ROUTING:")
    assert "huggingface, segmind" in message
    assert "basic, standard, professional, industry" in message
    assert "HOSTED_WITHOUT_KEY=local" in message
    assert isinstance(caught.value, SettingsError)


async def test_hosted_engines_can_start_as_unavailable() -> None:
    router = build_router(EngineSettings(keyless="unavailable"))
    assert isinstance(router.engines["segmind"], UnavailableEngine)
    with pytest.raises(EngineError) as caught:
        await router.matte(Tier.PROFESSIONAL, Image.new("RGB", (4, 4)))
    assert caught.value.code is FailCode.ENGINE_UNAVAILABLE
    assert caught.value.retryable is False


def test_a_fallback_without_its_key_is_dropped() -> None:
    engines = EngineSettings(
        routes=dict(ALL_FAKE), fallbacks={Tier.BASIC: Route(engine="segmind", model="x")}
    )
    assert build_router(engines).fallbacks == {}


async def test_a_call_records_engine_model_latency_and_cost() -> None:
    ticks = iter([10.0, 10.25])
    router = EngineRouter(
        dict(ALL_FAKE) | {Tier.INDUSTRY: Route(engine="segmind", model="birefnet-portrait")},
        {"fake": FakeEngine(), "segmind": FakeEngine()},
        clock=lambda: next(ticks),
    )
    call = await router.matte(Tier.INDUSTRY, Image.new("RGB", (5, 4)))
    assert call == EngineCall(
        matte=call.matte, engine="segmind", provider="segmind", model="birefnet-portrait",
        latency_ms=250, cost_idr=Decimal(138), attempts=1, fallback=False,
    )  # fmt: skip
    local = await EngineRouter(ALL_FAKE, {"fake": FakeEngine()}).matte(
        Tier.INDUSTRY, Image.new("RGB", (5, 4))
    )
    assert (local.engine, local.cost_idr) == ("fake", Decimal(0))


def test_a_route_to_an_unconfigured_engine_is_refused() -> None:
    routes = dict(ALL_FAKE) | {Tier.BASIC: Route(engine="local", model="isnet-medium")}
    with pytest.raises(EngineConfigError, match="tier basic routes to engine 'local'"):
        EngineRouter(routes, {"fake": FakeEngine()})


def test_every_tier_needs_a_route() -> None:
    routes: dict[Tier, Route] = {t: r for t, r in ALL_FAKE.items() if t is not Tier.STANDARD}
    with pytest.raises(EngineConfigError, match="no route for tier"):
        EngineRouter(routes, {"fake": FakeEngine()})


def test_a_model_the_engine_does_not_know_is_refused() -> None:
    routes = dict(ALL_FAKE) | {Tier.BASIC: Route(engine="local", model="isnet-huge")}
    with pytest.raises(EngineConfigError, match=r"'isnet-huge'.*knows: isnet-medium"):
        EngineRouter(routes, {"fake": FakeEngine(), "local": Catalogue()})


def test_engines_satisfy_the_protocol() -> None:
    for engine in (FakeEngine(), Catalogue(), UnavailableEngine("x", "y")):
        assert isinstance(engine, Engine)


def test_engine_error_codes_are_engine_codes() -> None:
    error = EngineError("boom", code=FailCode.ENGINE_UNAVAILABLE, retryable=True)
    assert (error.code, error.retryable, str(error)) == (FailCode.ENGINE_UNAVAILABLE, True, "boom")
    assert EngineError("x").code is FailCode.ENGINE_FAILED
    with pytest.raises(ValueError, match="engine_failed or engine_unavailable"):
        EngineError("x", code=FailCode.DECODE_FAILED)


def test_model_not_found() -> None:
    error = ModelNotFound("local", "nope", ["b", "a"])
    assert (error.engine, error.model, error.retryable) == ("local", "nope", False)
    assert "known models: a, b" in str(error)


def test_check_matte() -> None:
    good = Image.new("L", (3, 2))
    assert check_matte(good, (3, 2), "e") is good
    with pytest.raises(EngineError, match="mode L of"):
        check_matte(Image.new("RGB", (3, 2)), (3, 2), "e")
    with pytest.raises(EngineError):
        check_matte(good, (2, 3), "e")


async def test_warm_up_loads_routes_and_fallbacks() -> None:
    loaded: list[str] = []

    class Loading(Catalogue):
        models = ("isnet-medium", "isnet-small")

        async def load(self, model: str) -> None:
            loaded.append(model)

    routes = dict(ALL_FAKE) | {Tier.BASIC: Route(engine="local", model="isnet-medium")}
    backup = {Tier.BASIC: Route(engine="local", model="isnet-small")}
    router = EngineRouter(routes, {"fake": FakeEngine(), "local": Loading()}, fallbacks=backup)
    await warm_up(router)
    assert loaded == ["isnet-medium", "isnet-small"]
