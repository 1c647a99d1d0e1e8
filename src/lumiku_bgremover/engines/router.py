"""Tier to (engine, model) routing with resilience and fallbacks, checked at start-up.

`EngineRouter.matte(tier, image)` is the call the pipeline makes: the tier's engine
under its timeout, retries and circuit breaker (`engines.resilience`), then, when
that fails and the tier has a fallback route (TIER_FALLBACK), the fallback engine.
It returns an `EngineCall`: the matte, and which engine and model made it, in how
long, at what provider cost (HPP), so the item can record them.

`for_tier(tier)` keeps the older two-step call working: it returns an engine whose
`matte` runs the same resilient, falling-back call and drops the metadata.

Start-up policy for tiers routed to a hosted engine without its API key
(HOSTED_WITHOUT_KEY): `local` (default) reroutes them to the local engine
(KEYLESS_LOCAL_MODEL) and logs a warning naming them; `error` refuses to start
(`EngineConfigError`); `unavailable` starts with those tiers failing every image
with `engine_unavailable` (refunded).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

import httpx
from PIL import Image

from lumiku_bgremover import pricing
from lumiku_bgremover.contracts.codes import FailCode
from lumiku_bgremover.contracts.common import Tier
from lumiku_bgremover.engine_settings import HOSTED_ENGINES, EngineSettings, Resilience, Route
from lumiku_bgremover.engines.base import Engine, EngineConfigError, EngineError
from lumiku_bgremover.engines.fake import FakeEngine
from lumiku_bgremover.engines.links import ImageLinker
from lumiku_bgremover.engines.resilience import Clock, Jitter, Resilient, Sleep

__all__ = [
    "EngineCall",
    "EngineRouter",
    "TierEngine",
    "UnavailableEngine",
    "build_router",
    "effective_routes",
    "warm_up",
]

log = logging.getLogger(__name__)


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


@dataclass(frozen=True, slots=True)
class EngineCall:
    """A matte and how it was made: what the item records for margin reports."""

    matte: Image.Image
    engine: str  #: "huggingface", "segmind", "local" or "fake"
    provider: str  #: who ran the model: the engine, or its inference provider ("fal-ai")
    model: str
    latency_ms: int  #: the whole call, retries and fallback included
    cost_idr: Decimal  #: provider cost (HPP): the tier's, for hosted engines; 0 for ours
    attempts: int  #: calls made to the engine that answered
    fallback: bool  #: True when the tier's fallback route made the matte


async def warm_up(router: EngineRouter) -> None:
    """Load every routed model of engines that can (`load`), so no image waits for a download."""
    for tier, route in (*router.routes.items(), *router.fallbacks.items()):
        engine = router.engines[route.engine]
        load = getattr(engine, "load", None)
        if load is not None:
            log.info("loading %s model %s for tier %s", route.engine, route.model, tier)
            await load(route.model)


class EngineRouter:
    """Which engine and model serve each tier, and the resilient call that uses them.

    Construction checks that every tier has a route, that every route and fallback
    names a configured engine and, for engines exposing a `models` collection (the
    local engine does), that the engine knows the model; it raises `EngineConfigError`.
    """

    def __init__(
        self,
        routes: Mapping[Tier, Route],
        engines: Mapping[str, Engine],
        *,
        fallbacks: Mapping[Tier, Route] | None = None,
        resilience: Resilience | None = None,
        timeouts: Mapping[str, float] | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        jitter: Jitter = random.random,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._routes, self._fallbacks = dict(routes), dict(fallbacks or {})
        self._engines, self._clock, self._client = dict(engines), clock, client
        missing_tiers = [tier.value for tier in Tier if tier not in self._routes]
        if missing_tiers:
            raise EngineConfigError(f"no route for tier(s) {', '.join(missing_tiers)}")
        for tier, route in (*self._routes.items(), *self._fallbacks.items()):
            self._check(tier, route)
        policy, limits = resilience or Resilience(), dict(timeouts or {})
        self._resilient = {
            name: Resilient(
                engine,
                policy if name in HOSTED_ENGINES else IN_PROCESS,
                timeout_s=limits.get(name, 60.0),
                clock=clock,
                sleep=sleep,
                jitter=jitter,
            )
            for name, engine in self._engines.items()
        }

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
    def fallbacks(self) -> dict[Tier, Route]:
        """The fallback routes, by tier (a copy; tiers without one are absent)."""
        return dict(self._fallbacks)

    @property
    def engines(self) -> dict[str, Engine]:
        """The configured engines, by name (a copy)."""
        return dict(self._engines)

    def breaker(self, engine: str) -> Resilient:
        """The resilient wrapper (and its breaker) of `engine`."""
        return self._resilient[engine]

    def for_tier(self, tier: Tier) -> tuple[Engine, str]:
        """An engine running `tier`'s resilient call, and the tier's model name."""
        return TierEngine(self, tier), self._routes[tier].model

    async def matte(
        self, tier: Tier, image: Image.Image, *, model: str | None = None
    ) -> EngineCall:
        """The matte of `image` for `tier`, by its route or, failing that, its fallback."""
        started = self._clock()
        route = self._routes[tier]
        if model is not None:
            route = Route(engine=route.engine, model=model)
        try:
            return await self._call(tier, route, image, started, fallback=False)
        except EngineError as error:
            backup = self._fallbacks.get(tier)
            if backup is None:
                raise
            log.warning("tier %s: %s failed (%s); trying fallback %s:%s",
                        tier.value, route.engine, error, backup.engine, backup.model)  # fmt: skip
            try:
                return await self._call(tier, backup, image, started, fallback=True)
            except EngineError as second:
                raise _both_failed(error, second, backup) from second

    async def _call(
        self, tier: Tier, route: Route, image: Image.Image, started: float, *, fallback: bool
    ) -> EngineCall:
        done = await self._resilient[route.engine].call(image, route.model)
        engine = self._engines[route.engine]
        provider_of = getattr(engine, "provider_of", None)
        hosted = route.engine in HOSTED_ENGINES
        return EngineCall(
            matte=done.matte, engine=route.engine,
            provider=provider_of(route.model) if provider_of else route.engine,
            model=route.model, latency_ms=round((self._clock() - started) * 1000),
            cost_idr=pricing.TIERS[tier].cost_idr if hosted else Decimal(0),
            attempts=done.attempts, fallback=fallback,
        )  # fmt: skip

    async def aclose(self) -> None:
        """Close the HTTP client the router made for hosted engines (if it made one)."""
        if self._client is not None:
            await self._client.aclose()


#: Engines on our own CPUs get one try and no breaker: a failure there is not an outage to
#: ride out in-process; the work queue's redelivery (with its backoff) retries the item.
IN_PROCESS: Final = Resilience(attempts=1, breaker_failures=2**31)


def _both_failed(first: EngineError, second: EngineError, backup: Route) -> EngineError:
    """One error for a failed route and a failed fallback: retryable if either was."""
    return EngineError(
        f"{first}; fallback {backup.engine}:{backup.model} failed too: {second}",
        code=first.code,
        retryable=first.retryable or second.retryable,
    )


class TierEngine:
    """An `Engine` view of one tier's resilient, falling-back call (for `for_tier`)."""

    def __init__(self, router: EngineRouter, tier: Tier) -> None:
        self._router, self._tier = router, tier
        self.name = router.routes[tier].engine

    async def matte(self, image: Image.Image, *, model: str) -> Image.Image:
        """The tier's matte of `image`, `model` on the tier's engine (fallback included)."""
        return (await self._router.matte(self._tier, image, model=model)).matte


def effective_routes(settings: EngineSettings) -> tuple[dict[Tier, Route], dict[Tier, Route]]:
    """The routes and fallbacks after HOSTED_WITHOUT_KEY (see the module docstring)."""
    keyless = {t: r for t, r in settings.routes.items() if not settings.has_key(r.engine)}
    if keyless and settings.keyless == "error":
        tiers = ", ".join(tier.value for tier in keyless)
        engines = ", ".join(sorted({route.engine for route in keyless.values()}))
        raise EngineConfigError(
            f"tier(s) {tiers} route to {engines}, whose API key is not set (HF_TOKEN, "
            f"SEGMIND_API_KEY); set the key, route them elsewhere (e.g. TIER_ROUTING="
            f"'basic=local:isnet-medium'), or set HOSTED_WITHOUT_KEY=local"
        )
    routes = dict(settings.routes)
    if keyless and settings.keyless == "local":
        local = Route(engine="local", model=settings.keyless_model)
        routes |= dict.fromkeys(keyless, local)
        log.warning(
            "no API key for %s: tier(s) %s run on the local engine (%s) instead "
            "(HOSTED_WITHOUT_KEY=local)",
            ", ".join(sorted({r.engine for r in keyless.values()})),
            ", ".join(tier.value for tier in keyless), settings.keyless_model,
        )  # fmt: skip
    fallbacks = {t: r for t, r in settings.fallbacks.items() if settings.has_key(r.engine)}
    for tier in settings.fallbacks.keys() - fallbacks.keys():
        log.warning("tier %s: fallback %s has no API key; ignored", tier.value,
                    settings.fallbacks[tier].engine)  # fmt: skip
    return routes, fallbacks


def build_router(
    settings: EngineSettings,
    *,
    fake: Engine | None = None,
    local: Engine | None = None,
    client: httpx.AsyncClient | None = None,
    links: ImageLinker | None = None,
    clock: Clock = time.monotonic,
    sleep: Sleep = asyncio.sleep,
    concurrency: int = 1,
) -> EngineRouter:
    """The router for `settings`, building the engines its routes and fallbacks need.

    `concurrency` (items processed at once) sizes the local engine's threads when
    `settings.local_threads` does not.

    `fake` and `local` replace the engines otherwise built (a default `FakeEngine`;
    an `OnnxEngine` on `settings.model_cache_dir`). Hosted engines share `client`;
    when none is given the router makes one and closes it in `aclose`. `links` lends
    Segmind its input by URL; SEGMIND_IMAGE_TRANSPORT=url needs it.
    """
    routes, fallbacks = effective_routes(settings)
    needed = {route.engine for route in (*routes.values(), *fallbacks.values())}
    owned = None
    if client is None and needed & HOSTED_ENGINES:
        client = owned = httpx.AsyncClient(timeout=httpx.Timeout(max_timeout(settings)))
    local = local or (_default_local(settings, concurrency) if "local" in needed else None)
    engines = _engines(settings, needed, fake=fake, local=local, client=client, links=links)
    timeouts = {name: settings.timeout_for(name) for name in engines}
    _log_routing(routes, fallbacks)
    return EngineRouter(routes, engines, fallbacks=fallbacks, resilience=settings.resilience,
                        timeouts=timeouts, clock=clock, sleep=sleep, client=owned)  # fmt: skip


def max_timeout(settings: EngineSettings) -> float:
    """The longest per-engine timeout (the shared HTTP client's own limit)."""
    return max([settings.timeout_s, *settings.timeouts.values()])


def _engines(
    settings: EngineSettings,
    needed: set[str],
    *,
    fake: Engine | None,
    local: Engine | None,
    client: httpx.AsyncClient | None,
    links: ImageLinker | None,
) -> dict[str, Engine]:
    engines: dict[str, Engine] = {}
    if "fake" in needed:
        engines["fake"] = fake or FakeEngine()
    if "local" in needed:
        engines["local"] = local or _default_local(settings, 1)
    if needed & HOSTED_ENGINES:
        assert client is not None
        engines |= _hosted(settings, needed, client, links)
    return engines


def _hosted(
    settings: EngineSettings,
    needed: set[str],
    client: httpx.AsyncClient,
    links: ImageLinker | None,
) -> dict[str, Engine]:
    from lumiku_bgremover.engines.huggingface import HuggingFaceEngine  # noqa: PLC0415
    from lumiku_bgremover.engines.segmind import SegmindEngine  # noqa: PLC0415

    engines: dict[str, Engine] = {}
    if "huggingface" in needed and settings.hf_token:
        engines["huggingface"] = HuggingFaceEngine(
            client, token=settings.hf_token, endpoint=settings.hf_endpoint,
            router=settings.hf_router, providers=settings.hf_providers,
        )  # fmt: skip
    if "segmind" in needed and settings.segmind_api_key:
        engines["segmind"] = SegmindEngine(
            client, api_key=settings.segmind_api_key, endpoint=settings.segmind_endpoint,
            models=settings.segmind_models, links=_segmind_links(settings, links),
        )  # fmt: skip
    for name in sorted((needed & HOSTED_ENGINES) - engines.keys()):  # HOSTED_WITHOUT_KEY
        engines[name] = UnavailableEngine(name, "its API key is not set")
    return engines


def _segmind_links(settings: EngineSettings, links: ImageLinker | None) -> ImageLinker | None:
    """The linker when SEGMIND_IMAGE_TRANSPORT=url (an error without one), else None."""
    if settings.segmind_image_transport != "url":
        return None
    if links is None:
        raise EngineConfigError(
            "SEGMIND_IMAGE_TRANSPORT=url needs an object store to lend the image from; "
            "none was given to the engines"
        )
    log.info("segmind: images travel as presigned URLs (SEGMIND_IMAGE_TRANSPORT=url)")
    return links


def _default_local(settings: EngineSettings, concurrency: int) -> Engine:
    from lumiku_bgremover.engines.hub import HubLimits  # noqa: PLC0415
    from lumiku_bgremover.engines.local import hub_downloader, local_engine  # noqa: PLC0415

    limits = HubLimits(max_bytes=settings.model_download_max_bytes)
    return local_engine(
        settings.model_cache_dir,
        intra_op_num_threads=settings.local_threads,
        concurrency=concurrency,
        providers=settings.local_providers,
        sources=settings.model_sources,
        downloader=hub_downloader(trust_unpinned=settings.model_trust_unpinned, limits=limits),
    )


def _log_routing(routes: Mapping[Tier, Route], fallbacks: Mapping[Tier, Route]) -> None:
    for tier, route in routes.items():
        backup = fallbacks.get(tier)
        extra = f" (fallback {backup.engine}:{backup.model})" if backup else ""
        log.info("tier %s: %s:%s%s", tier.value, route.engine, route.model, extra)
