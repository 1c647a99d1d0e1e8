"""Engine settings: credentials, endpoints, tier routing, fallbacks and resilience.

Read from the environment by `engine_settings_from_env` (called by `Settings.from_env`);
`lumiku_bgremover.settings` re-exports everything here. The README's table lists
every variable.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal, TypeVar
from urllib.parse import urlsplit

from lumiku_bgremover.contracts.common import Tier
from lumiku_bgremover.envparse import Env, SettingsError

__all__ = [
    "DEFAULT_HF_PROVIDERS",
    "DEFAULT_ROUTES",
    "ENGINES",
    "HOSTED_ENGINES",
    "EngineSettings",
    "KeylessPolicy",
    "ModelSource",
    "ProviderModel",
    "Resilience",
    "Route",
    "SegmindTransport",
    "engine_settings_from_env",
]

HF_ENDPOINT: Final = "https://router.huggingface.co/hf-inference"
HF_ROUTER: Final = "https://router.huggingface.co"
SEGMIND_ENDPOINT: Final = "https://api.segmind.com"
MODEL_CACHE_DIR: Final = Path("~/.cache/lumiku-bgremover")
#: Every engine a route may name.
ENGINES: Final = frozenset({"huggingface", "segmind", "local", "fake"})
#: Engines billed per image by a provider (they need an API key).
HOSTED_ENGINES: Final = frozenset({"huggingface", "segmind"})
#: What to do at start-up with tiers routed to a hosted engine whose key is not set.
KeylessPolicy = Literal["local", "error", "unavailable"]
_KEYLESS: Final[dict[str, KeylessPolicy]] = {
    "local": "local",
    "error": "error",
    "unavailable": "unavailable",
}
#: How the Segmind engine sends the image: inline as base64, or as a presigned URL of a
#: short-lived copy in our object store (`engines.links`).
SegmindTransport = Literal["base64", "url"]
_TRANSPORTS: Final[dict[str, SegmindTransport]] = {"base64": "base64", "url": "url"}
_T = TypeVar("_T")
_SHA256: Final = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """Which engine and model serve a tier."""

    engine: str  #: "huggingface", "segmind", "local" or "fake"
    model: str


@dataclass(frozen=True, slots=True)
class ProviderModel:
    """A Hugging Face model served by an inference provider (submit-then-poll)."""

    provider: str  #: e.g. "fal-ai"
    model_id: str  #: the provider's own id, e.g. "fal-ai/bria/background/remove"


DEFAULT_ROUTES: dict[Tier, Route] = {
    Tier.BASIC: Route(engine="huggingface", model="briaai/RMBG-1.4"),
    Tier.STANDARD: Route(engine="huggingface", model="briaai/RMBG-2.0"),
    Tier.PROFESSIONAL: Route(engine="segmind", model="birefnet-general"),
    Tier.INDUSTRY: Route(engine="segmind", model="birefnet-portrait"),
}

#: RMBG-2.0 is not on hf-inference; Hugging Face routes it to fal (the provider mapping
#: Hugging Face publishes for briaai/RMBG-2.0).
DEFAULT_HF_PROVIDERS: dict[str, ProviderModel] = {
    "briaai/RMBG-2.0": ProviderModel("fal-ai", "fal-ai/bria/background/remove"),
}


@dataclass(frozen=True, slots=True)
class ModelSource:
    """Where the local engine downloads a model's weights, and the sha256 they must have."""

    url: str
    sha256: str | None = None  #: None: the hub's advertised sha256 (X-Linked-Etag) is used


@dataclass(frozen=True, slots=True, kw_only=True)
class Resilience:
    """Retries, backoff and the circuit breaker around each engine call."""

    #: Calls per image before giving up for this delivery (1 = no retry).
    attempts: int = 3
    #: First backoff delay; doubles per attempt up to `backoff_cap_s` (full jitter).
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 20.0
    #: The longest wait (Retry-After, model loading) sat out in-process; a longer one
    #: ends the call as retryable, so the work queue redelivers the item later.
    max_wait_s: float = 30.0
    #: Consecutive failures that open an engine's breaker, and how long it stays open.
    breaker_failures: int = 5
    breaker_cooldown_s: float = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineSettings:
    """Engine credentials, endpoints, the tier routing, fallbacks and resilience."""

    hf_token: str | None = field(default=None, repr=False)
    hf_endpoint: str = HF_ENDPOINT
    #: Base of Hugging Face's router, under which `/<provider>/...` reaches a provider.
    hf_router: str = HF_ROUTER
    hf_providers: dict[str, ProviderModel] = field(
        default_factory=lambda: dict(DEFAULT_HF_PROVIDERS)
    )
    segmind_api_key: str | None = field(default=None, repr=False)
    segmind_endpoint: str = SEGMIND_ENDPOINT
    #: Our model name to Segmind's endpoint name (`/v1/<name>`); unlisted: the same name.
    segmind_models: dict[str, str] = field(default_factory=dict)
    #: "url": the image travels as a presigned URL of a temporary object, not as base64.
    segmind_image_transport: SegmindTransport = "base64"
    model_cache_dir: Path = field(default_factory=MODEL_CACHE_DIR.expanduser)
    #: Download URLs (and pins) of local models over the built-in catalogue.
    model_sources: dict[str, ModelSource] = field(default_factory=dict)
    #: Download weights that neither a pin nor the hub's sha256 can check.
    model_trust_unpinned: bool = False
    #: The largest weights file a download may bring.
    model_download_max_bytes: int = 2 << 30
    routes: dict[Tier, Route] = field(default_factory=lambda: dict(DEFAULT_ROUTES))
    #: An engine tried when a tier's own engine fails or its breaker is open.
    fallbacks: dict[Tier, Route] = field(default_factory=dict)
    #: Default per-call timeout; `timeouts` overrides it per engine.
    timeout_s: float = 60.0
    timeouts: dict[str, float] = field(default_factory=dict)
    resilience: Resilience = field(default_factory=Resilience)
    #: Tiers routed to a hosted engine without its key: reroute to the local engine
    #: (logged at start-up), refuse to start, or start with that tier failing.
    keyless: KeylessPolicy = "local"
    keyless_model: str = "isnet-medium"
    #: ONNX Runtime threads per inference of the local engine (None: the usable cores
    #: divided by WORKER_CONCURRENCY, at least one).
    local_threads: int | None = None
    #: ONNX Runtime execution providers; empty: CUDA when offered, else CPU.
    local_providers: tuple[str, ...] = ()
    #: The fake engine's delay per image and failure rate (tests, demos, benchmarks).
    fake_delay_s: float = 0.0
    fake_failure_rate: float = 0.0

    def timeout_for(self, engine: str) -> float:
        """The per-call timeout of `engine`."""
        return self.timeouts.get(engine, self.timeout_s)

    def has_key(self, engine: str) -> bool:
        """Whether a hosted engine has its credential (other engines need none)."""
        if engine == "huggingface":
            return bool(self.hf_token)
        if engine == "segmind":
            return bool(self.segmind_api_key)
        return True


def engine_settings_from_env(env: Env) -> EngineSettings:
    """The engine settings from environment variables (see the README's table)."""
    timeout_s = env.number("ENGINE_TIMEOUT_S", 60.0, lo=1.0, hi=600.0)
    return EngineSettings(
        hf_token=env.text("HF_TOKEN"),
        hf_endpoint=_http_url(env, "HF_ENDPOINT", HF_ENDPOINT),
        hf_router=_http_url(env, "HF_ROUTER_URL", HF_ROUTER),
        hf_providers=_hf_providers(env),
        segmind_api_key=env.text("SEGMIND_API_KEY"),
        segmind_endpoint=_http_url(env, "SEGMIND_ENDPOINT", SEGMIND_ENDPOINT),
        segmind_models=_pairs(env, "SEGMIND_MODELS", lambda value: value),
        segmind_image_transport=_transport(env),
        model_cache_dir=env.dir("MODEL_CACHE_DIR") or MODEL_CACHE_DIR.expanduser(),
        model_sources=_pairs(env, "MODEL_SOURCES", model_source),
        model_trust_unpinned=env.flag("MODEL_TRUST_UNPINNED", default=False),
        model_download_max_bytes=env.integer("MODEL_DOWNLOAD_MAX_MB", 2048, lo=1, hi=65536) << 20,
        routes=_routes(env, "TIER_ROUTING", dict(DEFAULT_ROUTES)),
        fallbacks=_routes(env, "TIER_FALLBACK", {}),
        timeout_s=timeout_s,
        timeouts=_timeouts(env),
        resilience=_resilience(env),
        keyless=_keyless(env),
        keyless_model=env.text("KEYLESS_LOCAL_MODEL", "isnet-medium") or "isnet-medium",
        local_threads=env.integer("LOCAL_ENGINE_THREADS", 0, lo=0, hi=256) or None,
        local_providers=env.items("LOCAL_ENGINE_PROVIDERS"),
        fake_delay_s=env.number("FAKE_ENGINE_DELAY_S", 0.0, lo=0.0, hi=600.0),
        fake_failure_rate=env.number("FAKE_ENGINE_FAILURE_RATE", 0.0, lo=0.0, hi=1.0),
    )


def _http_url(env: Env, name: str, default: str) -> str:
    url = (env.text(name, default) or default).rstrip("/")
    if urlsplit(url).scheme not in {"http", "https"} or not urlsplit(url).hostname:
        raise SettingsError(name, f"expected an http(s) URL, got {url!r}")
    return url


def _pairs(env: Env, name: str, parse: Callable[[str], _T]) -> dict[str, _T]:
    """`key=value` entries, comma-separated; `parse` raises ValueError for a bad value."""
    pairs: dict[str, _T] = {}
    for entry in env.items(name):
        key, sep, value = (part.strip() for part in entry.partition("="))
        if not sep or not key or not value:
            raise SettingsError(name, f"expected key=value, got {entry!r}")
        try:
            pairs[key] = parse(value)
        except ValueError as error:
            raise SettingsError(name, f"{entry!r}: {error}") from None
    return pairs


def model_source(value: str) -> ModelSource:
    """`https://host/path[#sha256]`: an http(s) URL, optionally pinned (64 hex digits)."""
    url, _, pin = (part.strip() for part in value.partition("#"))
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError(f"expected an http(s) URL, got {url!r}")
    if pin and not _SHA256.fullmatch(pin.lower()):
        raise ValueError(f"expected a sha256 of 64 hex digits after '#', got {pin!r}")
    return ModelSource(url, pin.lower() or None)


def _provider_model(value: str) -> ProviderModel:
    provider, _, model_id = (part.strip() for part in value.partition(":"))
    if not provider or not model_id:
        raise ValueError("expected provider:provider-model-id")
    return ProviderModel(provider, model_id)


def _hf_providers(env: Env) -> dict[str, ProviderModel]:
    """HF_PROVIDER_MODELS: `model=provider:provider-model-id` over the defaults."""
    return dict(DEFAULT_HF_PROVIDERS) | _pairs(env, "HF_PROVIDER_MODELS", _provider_model)


def _route(value: str) -> Route:
    engine, _, model = (part.strip() for part in value.partition(":"))
    if engine not in ENGINES or not model:
        raise ValueError(f"expected engine:model with engine in {sorted(ENGINES)}")
    return Route(engine=engine, model=model)


def _routes(env: Env, name: str, base: dict[Tier, Route]) -> dict[Tier, Route]:
    """`tier=engine:model` pairs, comma-separated, over `base`."""
    routes = dict(base)
    for tier_name, route in _pairs(env, name, _route).items():
        if tier_name not in Tier.__members__.values():
            raise SettingsError(name, f"unknown tier {tier_name!r}")
        routes[Tier(tier_name)] = route
    return routes


def _seconds(value: str) -> float:
    seconds = float(value)
    if not 1.0 <= seconds <= 600.0:  # noqa: PLR2004 - the same bounds as ENGINE_TIMEOUT_S
        raise ValueError(f"must be between 1 and 600 seconds, got {seconds}")
    return seconds


def _timeouts(env: Env) -> dict[str, float]:
    """ENGINE_TIMEOUTS: `engine=seconds` pairs overriding ENGINE_TIMEOUT_S."""
    timeouts = _pairs(env, "ENGINE_TIMEOUTS", _seconds)
    unknown = sorted(set(timeouts) - ENGINES)
    if unknown:
        raise SettingsError("ENGINE_TIMEOUTS", f"unknown engine(s) {', '.join(unknown)}")
    return timeouts


def _resilience(env: Env) -> Resilience:
    base = env.number("ENGINE_BACKOFF_BASE_S", 0.5, lo=0.0, hi=60.0)
    cap = env.number("ENGINE_BACKOFF_CAP_S", 20.0, lo=0.0, hi=600.0)
    if cap < base:
        raise SettingsError("ENGINE_BACKOFF_CAP_S", f"{cap} is below ENGINE_BACKOFF_BASE_S {base}")
    return Resilience(
        attempts=env.integer("ENGINE_ATTEMPTS", 3, lo=1, hi=10),
        backoff_base_s=base,
        backoff_cap_s=cap,
        max_wait_s=env.number("ENGINE_MAX_WAIT_S", 30.0, lo=0.0, hi=600.0),
        breaker_failures=env.integer("ENGINE_BREAKER_FAILURES", 5, lo=1, hi=1000),
        breaker_cooldown_s=env.number("ENGINE_BREAKER_COOLDOWN_S", 30.0, lo=0.1, hi=3600.0),
    )


def _transport(env: Env) -> SegmindTransport:
    raw = (env.text("SEGMIND_IMAGE_TRANSPORT", "base64") or "base64").lower()
    transport = _TRANSPORTS.get(raw)
    if transport is None:
        raise SettingsError(
            "SEGMIND_IMAGE_TRANSPORT", f"expected one of {sorted(_TRANSPORTS)}, got {raw!r}"
        )
    return transport


def _keyless(env: Env) -> KeylessPolicy:
    raw = env.text("HOSTED_WITHOUT_KEY", "local") or "local"
    policy = _KEYLESS.get(raw)
    if policy is None:
        raise SettingsError(
            "HOSTED_WITHOUT_KEY", f"expected one of {sorted(_KEYLESS)}, got {raw!r}"
        )
    return policy
