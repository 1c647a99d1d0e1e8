"""Tier routing and the engine errors' contract."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from lumiku_bgremover.contracts.codes import FailCode
from lumiku_bgremover.contracts.common import Tier
from lumiku_bgremover.engines import (
    Engine,
    EngineConfigError,
    EngineError,
    EngineRouter,
    FakeEngine,
    ModelNotFound,
    UnavailableEngine,
    build_router,
)
from lumiku_bgremover.engines.base import check_matte
from lumiku_bgremover.engines.local import OnnxEngine
from lumiku_bgremover.settings import EngineSettings, Route, SettingsError

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
        assert engine is fake
        assert model == f"m-{tier.value}"


def test_mixed_routes() -> None:
    routes = dict(ALL_FAKE) | {Tier.INDUSTRY: Route(engine="local", model="isnet-medium")}
    local = Catalogue()
    router = build_router(settings(routes), local=local)
    assert router.for_tier(Tier.INDUSTRY) == (local, "isnet-medium")
    assert router.for_tier(Tier.BASIC)[0].name == "fake"
    assert set(router.engines) == {"fake", "local"}
    assert router.routes == routes


def test_a_default_fake_engine_is_built_when_none_is_given() -> None:
    engine, _ = build_router(settings(ALL_FAKE)).for_tier(Tier.BASIC)
    assert isinstance(engine, FakeEngine)


def test_a_default_local_engine_is_built_lazily(tmp_path: Path) -> None:
    routes = {tier: Route(engine="local", model="isnet-medium") for tier in Tier}
    cache = tmp_path / "models"
    engine, model = build_router(settings(routes, cache)).for_tier(Tier.PROFESSIONAL)
    assert isinstance(engine, OnnxEngine)
    assert model == "isnet-medium"
    assert not cache.exists()  # nothing fetched at construction


def test_hosted_engines_refuse_to_start_by_default() -> None:
    with pytest.raises(EngineConfigError) as caught:
        build_router(EngineSettings())  # the business defaults: huggingface and segmind
    message = str(caught.value)
    assert message.startswith("TIER_ROUTING:")
    assert "huggingface" in message
    assert "basic, standard" in message
    assert isinstance(caught.value, SettingsError)


async def test_hosted_engines_can_start_as_unavailable() -> None:
    router = build_router(EngineSettings(), missing="unavailable")
    engine, model = router.for_tier(Tier.PROFESSIONAL)
    assert isinstance(engine, UnavailableEngine)
    assert (engine.name, model) == ("segmind", "birefnet-general")
    with pytest.raises(EngineError) as caught:
        await engine.matte(Image.new("RGB", (4, 4)), model=model)
    assert caught.value.code is FailCode.ENGINE_UNAVAILABLE
    assert caught.value.retryable is False


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
