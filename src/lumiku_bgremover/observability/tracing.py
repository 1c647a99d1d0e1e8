"""OpenTelemetry spans of the pipeline and the W3C trace context in NATS headers.

One trace follows a request: intake (a child of the caller's span when the request
carried `traceparent`), each work item (its message carries intake's `traceparent`)
and the batch's completion (inside the item that ended it). Every event the service
publishes carries the `traceparent` of the span that published it.

Only the OpenTelemetry API is needed: without a configured `TracerProvider` spans
are non-recording and cost next to nothing, and a caller's trace context still
passes through unchanged. Tests and deployments hand in a provider (the SDK is the
`otel` extra).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Final

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

__all__ = ["TRACEPARENT", "TRACER_NAME", "Tracing"]

TRACER_NAME: Final = "lumiku_bgremover"
TRACEPARENT: Final = "traceparent"


class Tracing:
    """Starts the pipeline's spans and carries their context in message headers."""

    def __init__(self, provider: TracerProvider | None = None) -> None:
        """Spans go to `provider`, or to the global one (a no-op unless configured)."""
        source = provider if provider is not None else trace.get_tracer_provider()
        self._tracer = source.get_tracer(TRACER_NAME)
        self._propagator = TraceContextTextMapPropagator()

    def headers(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """`base` plus the current span's `traceparent` (and `tracestate`), when there is one."""
        carrier = dict(base or {})
        self._propagator.inject(carrier)
        return carrier

    @contextlib.contextmanager
    def span(
        self,
        name: str,
        *,
        parent: Mapping[str, str] | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        ids: Mapping[str, str | None] | None = None,
    ) -> Iterator[Span]:
        """A current span named `name`: a child of the trace context in the `parent`
        headers when given (a new trace if they carry none), else of the current span.

        `ids` (batch, item, user) become `lumiku.<name>` attributes.
        """
        context = self._propagator.extract(parent) if parent is not None else None
        attributes: dict[str, AttributeValue] = {
            f"lumiku.{name}": value for name, value in (ids or {}).items() if value
        }
        with self._tracer.start_as_current_span(
            name, context=context, kind=kind, attributes=attributes
        ) as current:
            yield current
