"""Sending spans: an OTLP/HTTP exporter when an endpoint is configured, else nothing.

Without `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) no provider is built:
spans stay non-recording and a caller's trace context still passes through. With it,
the SDK and the exporter (both in the `otel` extra) batch spans to the collector; the
exporter reads its other standard variables itself (`OTEL_EXPORTER_OTLP_HEADERS`,
`..._CERTIFICATE`, `..._TIMEOUT`, `..._COMPRESSION`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lumiku_bgremover.envparse import SettingsError
from lumiku_bgremover.settings import ObservabilitySettings

if TYPE_CHECKING:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider

__all__ = ["span_exporter", "tracer_provider"]


def span_exporter(config: ObservabilitySettings) -> OTLPSpanExporter | None:
    """The OTLP/HTTP exporter of `config.otlp_traces_endpoint`; None when unset.

    Builds it only: nothing is sent until a span ends under a provider that uses it.
    """
    if config.otlp_traces_endpoint is None:
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter,
        )
    except ImportError:
        raise SettingsError(
            "OTEL_EXPORTER_OTLP_ENDPOINT", "is set but the `otel` extra is not installed"
        ) from None
    return OTLPSpanExporter(endpoint=config.otlp_traces_endpoint)


def tracer_provider(config: ObservabilitySettings) -> TracerProvider | None:
    """An SDK provider batching spans to the OTLP exporter; None when no endpoint is set.

    The caller shuts it down (flushing what is batched) when the service stops.
    """
    exporter = span_exporter(config)
    if exporter is None:
        return None
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

    provider = TracerProvider(resource=Resource.create({"service.name": config.service_name}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider
