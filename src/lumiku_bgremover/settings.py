"""Typed, frozen settings built once from the environment at start-up."""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from lumiku_bgremover.engine_settings import (
    DEFAULT_ROUTES,
    ENGINES,
    HOSTED_ENGINES,
    EngineSettings,
    ProviderModel,
    Resilience,
    Route,
    engine_settings_from_env,
)
from lumiku_bgremover.envparse import Env, SettingsError
from lumiku_bgremover.integration_settings import (
    IntegrationSettings,
    NotifierSettings,
    SmtpSettings,
    integration_settings_from_env,
    notifier_settings_from_env,
)

__all__ = [
    "DEFAULT_ROUTES",
    "ENGINES",
    "HOSTED_ENGINES",
    "DatabaseSettings",
    "EngineSettings",
    "IntegrationSettings",
    "Limits",
    "LogFormat",
    "NatsSettings",
    "NotifierSettings",
    "ObservabilitySettings",
    "ProviderModel",
    "Resilience",
    "RetentionSettings",
    "Role",
    "Route",
    "S3Settings",
    "Settings",
    "SettingsError",
    "SmtpSettings",
    "StorageSettings",
]

MIB = 1024 * 1024


class Role(enum.StrEnum):
    """What one process serves, so workers and the request side scale apart (`ROLE`)."""

    ALL = "all"  #: everything (one Deployment, the embedded stack, tests)
    WORKER = "worker"  #: the work queue and its dead letters
    API = "api"  #: intake, cancels, quotes, batch status and the admin subjects

    @property
    def works(self) -> bool:
        """Runs the work queue and the dead-letter mover."""
        return self is not Role.API

    @property
    def serves_requests(self) -> bool:
        """Subscribes the request stream and the request-reply subjects."""
        return self is not Role.WORKER


class LogFormat(enum.StrEnum):
    """How log lines are written (`LOG_FORMAT`)."""

    TEXT = "text"  #: one human-readable line
    JSON = "json"  #: one JSON object a line, with batch, item and user ids as fields


@dataclass(frozen=True, slots=True, kw_only=True)
class NatsSettings:
    """How to reach NATS and how our subjects and streams are named."""

    servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    creds_file: Path | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: Prepended to every subject ("" in production; "t1234." isolates a test run).
    subject_prefix: str = ""
    #: Prepended to every stream and durable consumer name.
    stream_prefix: str = "BGREMOVE"
    stream_replicas: int = 1
    duplicate_window_s: float = 120.0
    publish_timeout_s: float = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class DatabaseSettings:
    """PostgreSQL connection."""

    url: str = field(repr=False)
    pool_min: int = 1
    pool_max: int = 10


@dataclass(frozen=True, slots=True, kw_only=True)
class S3Settings:
    """The S3 API server (MinIO in production) holding originals, results and archives."""

    endpoint: str  #: "host:port", no scheme
    access_key: str
    secret_key: str = field(repr=False)
    bucket: str = "lumiku-bgremover"
    region: str = "us-east-1"
    secure: bool = True
    presign_ttl_s: int = 3600
    #: Buckets besides our own that image references may name.
    allowed_buckets: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class StorageSettings:
    """Which object store: S3 (production) or a local directory (embedded mode)."""

    backend: str = "s3"  #: "s3" or "local"
    s3: S3Settings | None = None
    local_dir: Path | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Request and processing limits (DESIGN.md, business rules)."""

    max_images: int = 500
    max_image_bytes: int = 10 * MIB
    max_batch_bytes: int = 2048 * MIB
    max_image_pixels: int = 50_000_000
    work_partitions: int = 8
    worker_concurrency: int = 2
    interactive_max_images: int = 10
    max_deliver: int = 5
    #: Seconds a delivered work item may go without an ack or a heartbeat before redelivery.
    work_ack_wait_s: float = 60.0
    #: Seconds a stopping worker lets its in-flight items finish before it NAKs them
    #: (the Helm chart sets it from the pod's termination grace period).
    work_drain_s: float = 30.0


#: Every interface of the pod: the metrics and health port must be reachable by the kubelet.
ALL_INTERFACES = "0.0.0.0"  # noqa: S104
#: Shortest row retention: the requests stream keeps a request 7 days, and a batch row is
#: what makes its redelivery a no-op (`request_id`), so rows must outlive it.
MIN_BATCH_RETENTION_DAYS = 8


@dataclass(frozen=True, slots=True, kw_only=True)
class ObservabilitySettings:
    """The metrics and health HTTP port, and how often the queue lag is measured."""

    #: TCP port of `/metrics`, `/livez` and `/readyz`; 0 turns the server off. Settings
    #: built in code (tests, embedded stacks) have it off; `METRICS_PORT` defaults to 9090.
    metrics_port: int = 0
    metrics_host: str = ALL_INTERFACES
    #: Seconds between two measurements of the work-queue lag.
    lag_interval_s: float = 15.0
    #: Seconds each readiness check (NATS, PostgreSQL, object store) may take.
    health_timeout_s: float = 2.0
    #: Where spans are sent (OTLP over HTTP, the full `/v1/traces` URL); None: nowhere.
    #: From `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, or `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces`.
    otlp_traces_endpoint: str | None = None
    #: `service.name` of the spans (`OTEL_SERVICE_NAME`).
    service_name: str = "lumiku-bgremover"


@dataclass(frozen=True, slots=True, kw_only=True)
class RetentionSettings:
    """How long objects and finished batches are kept, in days; 0 keeps them forever."""

    results_days: int = 0
    archives_days: int = 0
    originals_days: int = 0
    #: Finished batches (and their items) older than this are deleted by `cleanup`.
    batches_days: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Everything the service reads from its environment."""

    nats: NatsSettings = field(default_factory=NatsSettings)
    database: DatabaseSettings | None = None
    storage: StorageSettings = field(default_factory=StorageSettings)
    engines: EngineSettings = field(default_factory=EngineSettings)
    limits: Limits = field(default_factory=Limits)
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("Asia/Jakarta"))
    admin_subjects_enabled: bool = False
    #: `run` creates or updates streams, consumers and the bucket at start; off, it only
    #: checks its consumers exist (a separate `provision` step made them), so its NATS
    #: user needs no stream or consumer create/update permission.
    provision_on_start: bool = True
    log_level: str = "INFO"
    log_format: LogFormat = LogFormat.TEXT
    role: Role = Role.ALL
    observability: ObservabilitySettings = field(default_factory=ObservabilitySettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    integrations: IntegrationSettings = field(default_factory=IntegrationSettings)
    notifier: NotifierSettings = field(default_factory=NotifierSettings)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from environment variables (see the README's table)."""
        env = Env(os.environ if environ is None else environ)
        storage, engines = _storage(env), engine_settings_from_env(env)
        _lendable(storage, engines)
        return cls(
            nats=_nats(env),
            database=_database(env),
            storage=storage,
            engines=engines,
            limits=_limits(env),
            timezone=_timezone(env),
            admin_subjects_enabled=env.flag("ADMIN_SUBJECTS_ENABLED", default=False),
            provision_on_start=env.flag("PROVISION_ON_START", default=True),
            log_level=_log_level(env),
            log_format=_choice(env, "LOG_FORMAT", LogFormat, LogFormat.TEXT),
            role=_choice(env, "ROLE", Role, Role.ALL),
            observability=_observability(env),
            retention=_retention(env),
            integrations=integration_settings_from_env(env),
            notifier=notifier_settings_from_env(env),
        )

    def require_database(self) -> DatabaseSettings:
        """The database settings, or a `SettingsError` naming DATABASE_URL."""
        if self.database is None:
            raise SettingsError("DATABASE_URL", "is required but not set")
        return self.database


_NATS_SCHEMES = frozenset({"nats", "tls", "ws", "wss"})
_PREFIX = re.compile(r"^([A-Za-z0-9_-]+\.)*$")
_STREAM_PREFIX = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_LOG_LEVELS = frozenset({"DEBUG", "INFO", "WARNING", "ERROR"})


def _one_nats_login(env: Env) -> None:
    """A creds file, user and password, or a token: the client and the broker would each
    pick a different one of several."""
    given = [name for name in ("NATS_CREDS", "NATS_USER", "NATS_TOKEN") if env.text(name)]
    if len(given) > 1:
        raise SettingsError(given[-1], f"use one NATS login, not {' and '.join(given)}")


def _nats(env: Env) -> NatsSettings:
    servers = env.items("NATS_URL") or ("nats://127.0.0.1:4222",)
    for url in servers:
        if urlsplit(url).scheme not in _NATS_SCHEMES or not urlsplit(url).hostname:
            raise SettingsError("NATS_URL", f"not a nats://, tls://, ws:// or wss:// URL: {url!r}")
    user, password = env.text("NATS_USER"), env.text("NATS_PASSWORD")
    if (user is None) != (password is None):
        raise SettingsError(
            "NATS_PASSWORD" if user else "NATS_USER", "user and password go together"
        )
    _one_nats_login(env)
    if env.text("NATS_TLS_KEY") is not None and env.text("NATS_TLS_CERT") is None:
        raise SettingsError("NATS_TLS_KEY", "a client key needs NATS_TLS_CERT")
    prefix = env.text("NATS_SUBJECT_PREFIX", "") or ""
    if not _PREFIX.match(prefix):
        raise SettingsError(
            "NATS_SUBJECT_PREFIX", f"must be tokens each ending in '.', got {prefix!r}"
        )
    stream_prefix = env.text("NATS_STREAM_PREFIX", "BGREMOVE") or "BGREMOVE"
    if not _STREAM_PREFIX.match(stream_prefix):
        raise SettingsError(
            "NATS_STREAM_PREFIX", f"letters, digits, _ and - only: {stream_prefix!r}"
        )
    return NatsSettings(
        servers=servers,
        user=user,
        password=password,
        token=env.text("NATS_TOKEN"),
        creds_file=env.file("NATS_CREDS"),
        tls_ca=env.file("NATS_TLS_CA"),
        tls_cert=env.file("NATS_TLS_CERT"),
        tls_key=env.file("NATS_TLS_KEY"),
        subject_prefix=prefix,
        stream_prefix=stream_prefix,
        stream_replicas=env.integer("NATS_STREAM_REPLICAS", 1, lo=1, hi=5),
        duplicate_window_s=env.number("NATS_DUPLICATE_WINDOW_S", 120.0, lo=1.0, hi=86_400.0),
        publish_timeout_s=env.number("NATS_PUBLISH_TIMEOUT_S", 5.0, lo=0.1, hi=120.0),
    )


def _database(env: Env) -> DatabaseSettings | None:
    url = env.text("DATABASE_URL")
    if url is None:
        return None
    if urlsplit(url).scheme not in {"postgres", "postgresql"}:
        raise SettingsError("DATABASE_URL", "must be a postgresql:// URL")
    pool_min = env.integer("DATABASE_POOL_MIN", 1, lo=0, hi=100)
    pool_max = env.integer("DATABASE_POOL_MAX", 10, lo=1, hi=200)
    if pool_min > pool_max:
        raise SettingsError("DATABASE_POOL_MIN", f"{pool_min} exceeds DATABASE_POOL_MAX {pool_max}")
    return DatabaseSettings(url=url, pool_min=pool_min, pool_max=pool_max)


def _s3(env: Env) -> S3Settings | None:
    raw = env.text("S3_ENDPOINT")
    if raw is None:
        return None
    parts = urlsplit(raw if "://" in raw else f"//{raw}")
    if (
        parts.scheme not in {"", "http", "https"}
        or not parts.hostname
        or parts.path not in {"", "/"}
    ):
        raise SettingsError(
            "S3_ENDPOINT", f"expected host:port or http(s)://host:port, got {raw!r}"
        )
    return S3Settings(
        endpoint=parts.netloc,
        access_key=env.required("S3_ACCESS_KEY"),
        secret_key=env.required("S3_SECRET_KEY"),
        bucket=_bucket(env, "S3_BUCKET", env.text("S3_BUCKET", "lumiku-bgremover") or ""),
        region=env.text("S3_REGION", "us-east-1") or "us-east-1",
        secure=env.flag("S3_SECURE", default=parts.scheme != "http"),
        presign_ttl_s=env.integer("S3_PRESIGN_TTL_S", 3600, lo=60, hi=7 * 86_400),
        allowed_buckets=tuple(
            _bucket(env, "S3_ALLOWED_BUCKETS", b) for b in env.items("S3_ALLOWED_BUCKETS")
        ),
    )


_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def _bucket(env: Env, variable: str, name: str) -> str:
    del env
    if not _BUCKET.match(name):
        raise SettingsError(variable, f"not a valid bucket name: {name!r}")
    return name


def _storage(env: Env) -> StorageSettings:
    s3 = _s3(env)
    backend = env.text("STORAGE_BACKEND", "s3") or "s3"
    if backend not in {"s3", "local"}:
        raise SettingsError("STORAGE_BACKEND", f"expected s3 or local, got {backend!r}")
    local_dir = env.dir("LOCAL_STORAGE_DIR")
    if backend == "local" and local_dir is None:
        raise SettingsError("LOCAL_STORAGE_DIR", "is required when STORAGE_BACKEND=local")
    return StorageSettings(backend=backend, s3=s3, local_dir=local_dir)


def _lendable(storage: StorageSettings, engines: EngineSettings) -> None:
    """Lending Segmind its inputs by URL needs an object store a provider can reach."""
    if engines.segmind_image_transport == "url" and storage.backend != "s3":
        raise SettingsError(
            "SEGMIND_IMAGE_TRANSPORT",
            "url needs the S3 object store (STORAGE_BACKEND=s3): Segmind cannot fetch "
            "the local store's file:// URLs",
        )


def _limits(env: Env) -> Limits:
    return Limits(
        max_images=env.integer("MAX_IMAGES_PER_BATCH", 500, lo=1, hi=500),
        max_image_bytes=env.integer("MAX_IMAGE_BYTES", 10 * MIB, lo=1024, hi=100 * MIB),
        max_batch_bytes=env.integer("MAX_BATCH_BYTES", 2048 * MIB, lo=MIB, hi=16 * 1024 * MIB),
        max_image_pixels=env.integer("MAX_IMAGE_PIXELS", 50_000_000, lo=10_000, hi=500_000_000),
        work_partitions=env.integer("WORK_PARTITIONS", 8, lo=1, hi=256),
        worker_concurrency=env.integer("WORKER_CONCURRENCY", 2, lo=1, hi=256),
        interactive_max_images=env.integer("INTERACTIVE_MAX_IMAGES", 10, lo=1, hi=500),
        max_deliver=env.integer("WORK_MAX_DELIVER", 5, lo=1, hi=100),
        work_ack_wait_s=env.number("WORK_ACK_WAIT_S", 60.0, lo=1.0, hi=3600.0),
        work_drain_s=env.number("WORK_DRAIN_S", 30.0, lo=1.0, hi=3600.0),
    )


def _timezone(env: Env) -> ZoneInfo:
    name = env.text("BUSINESS_TIMEZONE", "Asia/Jakarta") or "Asia/Jakarta"
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingsError("BUSINESS_TIMEZONE", f"unknown time zone {name!r}") from None


def _log_level(env: Env) -> str:
    level = (env.text("LOG_LEVEL", "INFO") or "INFO").upper()
    if level not in _LOG_LEVELS:
        raise SettingsError("LOG_LEVEL", f"expected one of {sorted(_LOG_LEVELS)}, got {level!r}")
    return level


_Choice = TypeVar("_Choice", bound=enum.StrEnum)


def _choice(env: Env, variable: str, kind: type[_Choice], default: _Choice) -> _Choice:
    raw = (env.text(variable, default.value) or default.value).lower()
    try:
        return kind(raw)
    except ValueError:
        names = ", ".join(member.value for member in kind)
        raise SettingsError(variable, f"expected one of {names}, got {raw!r}") from None


def _observability(env: Env) -> ObservabilitySettings:
    return ObservabilitySettings(
        metrics_port=env.integer("METRICS_PORT", 9090, lo=0, hi=65_535),
        metrics_host=env.text("METRICS_HOST", ALL_INTERFACES) or ALL_INTERFACES,
        lag_interval_s=env.number("QUEUE_LAG_INTERVAL_S", 15.0, lo=0.1, hi=3600.0),
        health_timeout_s=env.number("HEALTH_TIMEOUT_S", 2.0, lo=0.1, hi=60.0),
        otlp_traces_endpoint=_otlp_traces_endpoint(env),
        service_name=env.text("OTEL_SERVICE_NAME", "lumiku-bgremover") or "lumiku-bgremover",
    )


def _otlp_traces_endpoint(env: Env) -> str | None:
    """The OTLP/HTTP traces URL, as the OpenTelemetry specification builds it."""
    traces = env.text("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    base = env.text("OTEL_EXPORTER_OTLP_ENDPOINT")
    variable, url = (
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", traces)
        if traces
        else ("OTEL_EXPORTER_OTLP_ENDPOINT", base and f"{base.rstrip('/')}/v1/traces")
    )
    if url is not None and not url.startswith(("http://", "https://")):
        raise SettingsError(variable, f"expected an http(s):// URL, got {url!r}")
    return url


def _retention(env: Env) -> RetentionSettings:
    batches = env.integer("RETENTION_BATCHES_DAYS", 0, lo=0, hi=36_500)
    if 0 < batches < MIN_BATCH_RETENTION_DAYS:
        raise SettingsError(
            "RETENTION_BATCHES_DAYS",
            f"must be 0 (keep) or at least {MIN_BATCH_RETENTION_DAYS}, got {batches}",
        )
    return RetentionSettings(
        results_days=env.integer("RETENTION_RESULTS_DAYS", 0, lo=0, hi=36_500),
        archives_days=env.integer("RETENTION_ARCHIVES_DAYS", 0, lo=0, hi=36_500),
        originals_days=env.integer("RETENTION_ORIGINALS_DAYS", 0, lo=0, hi=36_500),
        batches_days=batches,
    )
