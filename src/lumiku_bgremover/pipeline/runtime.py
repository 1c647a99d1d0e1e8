"""Building and running the pipeline: intake, the work queue, completion, dead letters."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from nats.aio.client import Client

from lumiku_bgremover import messaging
from lumiku_bgremover.engines.fake import FakeEngine
from lumiku_bgremover.engines.links import StoreLinker, link_ttl
from lumiku_bgremover.engines.router import EngineRouter, build_router, warm_up
from lumiku_bgremover.observability.recorder import PipelineMetrics
from lumiku_bgremover.observability.tracing import Tracing
from lumiku_bgremover.pipeline.announce import Announcer
from lumiku_bgremover.pipeline.completion import Finalizer
from lumiku_bgremover.pipeline.dependencies import build_gate
from lumiku_bgremover.pipeline.events import EventPublisher
from lumiku_bgremover.pipeline.intake import Intake
from lumiku_bgremover.pipeline.processor import ItemProcessor
from lumiku_bgremover.provisioning import StreamNames
from lumiku_bgremover.queue import DeadLetterMover, JetStreamWorkQueue, WorkQueueRunner
from lumiku_bgremover.services import Services
from lumiku_bgremover.sources import DEFAULT_POLICY, FetchPolicy, SourceLoader, UrlFetcher

log = logging.getLogger(__name__)

#: Key under which handlers find the `Pipeline` in FastStream's context.
PIPELINE_KEY = "pipeline"


@dataclass(frozen=True, slots=True)
class Pipeline:
    """The running parts handlers and the work queue use."""

    services: Services
    intake: Intake
    finalizer: Finalizer
    processor: ItemProcessor
    announcer: Announcer


def default_router(services: Services) -> EngineRouter:
    """Engines for the configured routes; the fake one takes its delay and failure rate,
    and Segmind lends its inputs from the service's store (SEGMIND_IMAGE_TRANSPORT=url)."""
    engines = services.settings.engines
    fake = FakeEngine(delay_s=engines.fake_delay_s, failure_rate=engines.fake_failure_rate)
    links = StoreLinker(services.store, ttl_s=link_ttl(engines.timeout_for("segmind")))
    return build_router(
        engines, fake=fake, links=links, concurrency=services.settings.limits.worker_concurrency
    )


def presign_ttl(services: Services) -> int:
    """Lifetime of presigned URLs (the S3 setting, or an hour)."""
    s3 = services.settings.storage.s3
    return s3.presign_ttl_s if s3 is not None else 3600


def build_pipeline(
    services: Services,
    nc: Client,
    router: EngineRouter,
    fetcher: UrlFetcher,
    *,
    metrics: PipelineMetrics,
    tracing: Tracing | None = None,
) -> Pipeline:
    """Wire the pipeline's parts over one NATS connection, recording into `metrics` and
    tracing through `tracing` (the global OpenTelemetry provider when None)."""
    settings = services.settings
    tracing = tracing or Tracing()
    js = nc.jetstream(timeout=settings.nats.publish_timeout_s)
    events = EventPublisher(js, settings.nats, clock=services.clock, tracing=tracing)
    ttl = presign_ttl(services)
    s3 = settings.storage.s3
    loader = SourceLoader(
        services.store, fetcher, max_bytes=settings.limits.max_image_bytes,
        allowed_buckets=s3.allowed_buckets if s3 else (),
    )  # fmt: skip
    finalizer = Finalizer(
        services.pool, services.store, events, clock=services.clock, presign_ttl_s=ttl,
        max_entry_bytes=8 * settings.limits.max_image_bytes, metrics=metrics, tracing=tracing,
    )  # fmt: skip
    processor = ItemProcessor(
        services.pool, services.store, loader, router, events=events, finalizer=finalizer,
        clock=services.clock, max_pixels=settings.limits.max_image_pixels, presign_ttl_s=ttl,
        metrics=metrics, tracing=tracing,
    )  # fmt: skip
    announcer = Announcer(events, clock=services.clock)
    queue = JetStreamWorkQueue(js, settings.nats, tracing=tracing)
    intake = Intake(
        services.pool, loader, announcer, queue, limits=settings.limits, clock=services.clock,
        timezone=settings.timezone, metrics=metrics, tracing=tracing,
    )  # fmt: skip
    return Pipeline(services, intake, finalizer, processor, announcer)


@asynccontextmanager
async def run_pipeline(
    services: Services,
    *,
    metrics: PipelineMetrics,
    tracing: Tracing | None = None,
    router: EngineRouter | None = None,
    fetch_policy: FetchPolicy = DEFAULT_POLICY,
    work: bool = True,
) -> AsyncIterator[Pipeline]:
    """The pipeline with its work queue and dead-letter mover running (when `work`)."""
    settings = services.settings
    router = router or default_router(services)
    if work:  # the request side never runs an engine
        await warm_up(router)
    name = f"{messaging.CLIENT_NAME}-pipeline"
    nc = await messaging.connect(settings.nats, name=name, log_events=True)
    fetcher = UrlFetcher(policy=fetch_policy)
    pipeline = build_pipeline(services, nc, router, fetcher, metrics=metrics, tracing=tracing)
    js = nc.jetstream(timeout=settings.nats.publish_timeout_s)
    gate = build_gate(services.pool, services.store, nc, StreamNames.of(settings.nats).events)
    runner = WorkQueueRunner(js, settings.nats, settings.limits, pipeline.processor, gate=gate)
    mover = DeadLetterMover(js, settings.nats, pipeline.processor)
    try:
        if work:
            await runner.start()
            await mover.start()
        yield pipeline
    finally:
        await runner.stop(settings.limits.work_drain_s)
        await gate.close()
        await mover.stop()
        await fetcher.aclose()
        await router.aclose()
        await messaging.close(nc)  # every publish awaited its PubAck; nothing is left to drain
