"""Metrics, health and the work-queue lag: what Prometheus and the kubelet see."""

from lumiku_bgremover.observability.health import (
    Check,
    NotReadyError,
    Readiness,
    ReadinessReport,
    bucket_check,
    nats_check,
    nats_client_ping,
    postgres_check,
)
from lumiku_bgremover.observability.lag import LagMonitor
from lumiku_bgremover.observability.metrics import Metrics
from lumiku_bgremover.observability.runtime import METRICS_KEY, observe, readiness_of
from lumiku_bgremover.observability.server import HealthServer

__all__ = [
    "METRICS_KEY",
    "Check",
    "HealthServer",
    "LagMonitor",
    "Metrics",
    "NotReadyError",
    "Readiness",
    "ReadinessReport",
    "bucket_check",
    "nats_check",
    "nats_client_ping",
    "observe",
    "postgres_check",
    "readiness_of",
]
