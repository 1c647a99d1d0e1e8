"""The service's own Prometheus metrics, on a registry the caller owns (no global state).

Defined here, recorded by the pipeline (items, engine calls, credits, batches) and by
the `LagMonitor` (work-queue lag). FastStream's `NatsPrometheusMiddleware` adds the
subscribers' message metrics to the same registry; `PlainResponder` counts the quotes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from lumiku_bgremover.contracts.work import Lane

__all__ = ["BATCH_BUCKETS_S", "ENGINE_BUCKETS_S", "NAMESPACE", "Metrics"]

NAMESPACE: Final = "lumiku_bgremover"
#: Engine calls: a hosted API answers in about a second, the local model in 2 to 20 s.
ENGINE_BUCKETS_S: Final = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
#: Batches: one image in seconds, 500 images in many minutes.
BATCH_BUCKETS_S: Final = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


class Metrics:
    """Counters, histograms and gauges of the service, registered on `registry`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        ns = NAMESPACE
        self.items = Counter(
            "items", "Images finished, by tier, engine, outcome and failure code.",
            ["tier", "engine", "outcome", "code"], namespace=ns, registry=registry,
        )  # fmt: skip
        self.engine_latency = Histogram(
            "engine_latency_seconds", "Time of one engine call (matte of one image).",
            ["engine", "model"], namespace=ns, registry=registry, buckets=ENGINE_BUCKETS_S,
        )  # fmt: skip
        self.credits_charged = Counter(
            "credits_charged", "Credits charged, by tier.", ["tier"],
            namespace=ns, registry=registry,
        )  # fmt: skip
        self.credits_refunded = Counter(
            "credits_refunded", "Credits refunded, by tier.", ["tier"],
            namespace=ns, registry=registry,
        )  # fmt: skip
        self.batch_duration = Histogram(
            "batch_duration_seconds", "From acceptance to completion of a batch, by tier.",
            ["tier"], namespace=ns, registry=registry, buckets=BATCH_BUCKETS_S,
        )  # fmt: skip
        self.replies = Counter(
            "replies", "Requests answered on plain nats-py subjects (quotes), by subject.",
            ["subject"], namespace=ns, registry=registry,
        )  # fmt: skip
        self.queue_lag = Gauge(
            "work_queue_lag", "Work items stored or delivered but not acked, by lane.",
            ["lane"], namespace=ns, registry=registry,
        )  # fmt: skip
        self.queue_lag_total = Gauge(
            "work_queue_lag_total", "Work items stored or delivered but not acked, all lanes.",
            namespace=ns, registry=registry,
        )  # fmt: skip

    def item_finished(self, tier: str, engine: str, outcome: str, code: str = "") -> None:
        """Count one image reaching `outcome` (done, failed with `code`, or cancelled)."""
        self.items.labels(tier=tier, engine=engine, outcome=outcome, code=code).inc()

    def engine_call(self, engine: str, model: str, seconds: float) -> None:
        """Record the duration of one engine call."""
        self.engine_latency.labels(engine=engine, model=model).observe(seconds)

    def charged(self, tier: str, amount: int) -> None:
        """Count credits charged for a batch or single image (0 is not counted)."""
        if amount > 0:
            self.credits_charged.labels(tier=tier).inc(amount)

    def refunded(self, tier: str, amount: int) -> None:
        """Count credits given back for failed or cancelled images (0 is not counted)."""
        if amount > 0:
            self.credits_refunded.labels(tier=tier).inc(amount)

    def batch_finished(self, tier: str, seconds: float) -> None:
        """Record how long a batch took from acceptance to completion."""
        self.batch_duration.labels(tier=tier).observe(seconds)

    def record_lag(self, by_lane: Mapping[Lane, int]) -> None:
        """Set the lag gauges from one measurement of every lane."""
        for lane, lag in by_lane.items():
            self.queue_lag.labels(lane=lane.value).set(lag)
        self.queue_lag_total.set(sum(by_lane.values()))
