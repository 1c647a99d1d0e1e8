"""Tier to (engine, model) routing, checked once at start-up.

Policy for routes naming an engine this build cannot make yet (the hosted
`huggingface` and `segmind` engines): by default `build_router` refuses to start
(`EngineConfigError` naming the tiers and the TIER_ROUTING fix), because a paid
service that accepts work it can only fail and refund is worse than one that does
not start. `missing="unavailable"` starts anyway with an `UnavailableEngine` in
their place: every image routed there fails with `engine_unavailable` (refunded),
and the other tiers work.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from typing import Literal

from PIL import Image

from lumiku_bgremover.contracts.codes import FailCode
from lumiku_bgremover.contracts.common import Tier
from lumiku_bgremover.engines.base import Engine, EngineConfigError, EngineError
from lumiku_bgremover.engines.fake import FakeEngine
from lumiku_bgremover.settings import EngineSettings, Route

__all__ = ["EngineRouter", "MissingPolicy", "UnavailableEngine", "build_router", "warm_up"]

log = logging.getLogger(__name__)

#: What `build_router` does with a route naming an engine it cannot build.
MissingPolicy = Literal["error", "unavailable"]


class UnavailableEngine:
    """Stands in for an engine that is not available: every call fails, not retryable."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason

    async def matte(self, image: Image.Image, *, model: str) -> Image.Image:
        """Always raises `EngineError(engine_unavailable)`."""
        del image
        raise EngineError(
            f"engine {self.name!r} (model {model!r}) is unavailable: {self.reason}",
            code=FailCode.ENGINE_UNAVAILABLE,
            retryable=False,
        )


async def warm_up(router: EngineRouter) -> None:
    """Load every routed model of engines that can (`load`), so no image waits for a download."""
    for tier, route in router.routes.items():
        engine = router.engines[route.engine]
        load = getattr(engine, "load", None)
        if load is not None:
            log.info("loading %s model %s for tier %s", route.engine, route.model, tier)
            await load(route.model)


class EngineRouter:
    """Which engine and model serve each tier.

    Construction checks that every tier has a route, that every route names a
    configured engine and, for engines exposing a `models` collection (the local
    engine does), that the engine knows the model; it raises `EngineConfigError`.
    """

    def __init__(self, routes: Mapping[Tier, Route], engines: Mapping[str, Engine]) -> None:
        self._routes = dict(routes)
        self._engines = dict(engines)
        missing_tiers = [tier.value for tier in Tier if tier not in self._routes]
        if missing_tiers:
            raise EngineConfigError(f"no route for tier(s) {', '.join(missing_tiers)}")
        for tier, route in self._routes.items():
            self._check(tier, route)

    def _check(self, tier: Tier, route: Route) -> None:
        engine = self._engines.get(route.engine)
        if engine is None:
            raise EngineConfigError(
                f"tier {tier.value} routes to engine {route.engine!r}, which is not "
                f"configured (configured: {', '.join(sorted(self._engines)) or 'none'})"
            )
        models: Collection[str] | None = getattr(engine, "models", None)
        if models is not None and route.model not in models:
            raise EngineConfigError(
                f"tier {tier.value} routes to model {route.model!r}, which engine "
                f"{route.engine!r} does not know (it knows: {', '.join(sorted(models))})"
            )

    @property
    def routes(self) -> dict[Tier, Route]:
        """The routes, by tier (a copy)."""
        return dict(self._routes)

    @property
    def engines(self) -> dict[str, Engine]:
        """The configured engines, by name (a copy)."""
        return dict(self._engines)

    def for_tier(self, tier: Tier) -> tuple[Engine, str]:
        """The engine and model name serving `tier`."""
        route = self._routes[tier]
        return self._engines[route.engine], route.model


def build_router(
    settings: EngineSettings,
    *,
    fake: Engine | None = None,
    local: Engine | None = None,
    missing: MissingPolicy = "error",
) -> EngineRouter:
    """The router for `settings.routes`, building the engines its routes need.

    `fake` and `local` replace the engines otherwise built (a default `FakeEngine`;
    an `OnnxEngine` on `settings.model_cache_dir`). Routes naming any other engine
    follow `missing` (see this module's docstring).
    """
    engines: dict[str, Engine] = {}
    if fake is not None:
        engines["fake"] = fake
    if local is not None:
        engines["local"] = local
    needed = {route.engine for route in settings.routes.values()}
    if "fake" in needed and "fake" not in engines:
        engines["fake"] = FakeEngine()
    if "local" in needed and "local" not in engines:
        engines["local"] = _default_local(settings)
    for name in sorted(needed - engines.keys()):
        engines[name] = _missing(name, settings.routes, missing)
    return EngineRouter(settings.routes, engines)


def _default_local(settings: EngineSettings) -> Engine:
    from lumiku_bgremover.engines.local import local_engine  # noqa: PLC0415 - numpy is optional

    return local_engine(settings.model_cache_dir, intra_op_num_threads=settings.local_threads)


def _missing(name: str, routes: Mapping[Tier, Route], policy: MissingPolicy) -> Engine:
    tiers = ", ".join(tier.value for tier, route in routes.items() if route.engine == name)
    reason = f"the {name} engine is not part of this build yet"
    if policy == "unavailable":
        return UnavailableEngine(name, reason)
    raise EngineConfigError(
        f"tier(s) {tiers} route to engine {name!r}, but {reason}; route them to the "
        f"local or fake engine (e.g. TIER_ROUTING='basic=local:isnet-medium'), or start "
        f"with the 'unavailable' policy to fail those tiers' images (refunded)"
    )
