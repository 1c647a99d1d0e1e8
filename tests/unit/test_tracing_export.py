"""Spans leave the process only when an OTLP endpoint is configured (built, never sent)."""

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider

from lumiku_bgremover.envparse import SettingsError
from lumiku_bgremover.observability.export import span_exporter, tracer_provider
from lumiku_bgremover.settings import ObservabilitySettings, Settings

BASE = {"S3_ACCESS_KEY": "ak", "S3_SECRET_KEY": "sk"}


def observability(**env: str) -> ObservabilitySettings:
    return Settings.from_env(BASE | env).observability


def test_without_an_endpoint_nothing_is_built() -> None:
    config = observability()
    assert config.otlp_traces_endpoint is None
    assert span_exporter(config) is None
    assert tracer_provider(config) is None


@pytest.mark.parametrize(
    ("env", "endpoint"),
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"},
         "http://collector:4318/v1/traces"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "https://otel.example/"},
         "https://otel.example/v1/traces"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318",
          "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b:4318/custom"}, "http://b:4318/custom"),
    ],
)  # fmt: skip
def test_an_endpoint_builds_an_otlp_exporter(env: dict[str, str], endpoint: str) -> None:
    config = observability(**env)
    assert config.otlp_traces_endpoint == endpoint
    exporter = span_exporter(config)
    assert isinstance(exporter, OTLPSpanExporter)
    assert exporter._endpoint == endpoint
    exporter.shutdown()


def test_the_provider_names_the_service_and_batches_to_the_exporter() -> None:
    config = observability(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9", OTEL_SERVICE_NAME="bg")
    provider = tracer_provider(config)
    assert isinstance(provider, TracerProvider)
    try:
        assert provider.resource.attributes["service.name"] == "bg"
        [processor] = provider._active_span_processor._span_processors
        assert isinstance(processor.span_exporter, OTLPSpanExporter)  # type: ignore[attr-defined]
    finally:
        provider.shutdown()  # nothing was recorded: nothing is sent


@pytest.mark.parametrize(
    "variable", ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
)
def test_a_non_http_endpoint_is_refused(variable: str) -> None:
    with pytest.raises(SettingsError) as refused:
        observability(**{variable: "collector:4317"})
    assert refused.value.variable == variable
