"""Settings of the metrics/health port and of retention (issue 11): defaults, values, errors."""

import pytest

from lumiku_bgremover.settings import (
    ObservabilitySettings,
    RetentionSettings,
    Settings,
    SettingsError,
)


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.observability == ObservabilitySettings(
        metrics_port=9090, metrics_host="0.0.0.0", lag_interval_s=15.0, health_timeout_s=2.0
    )
    assert settings.retention == RetentionSettings(
        results_days=0, archives_days=0, originals_days=0, batches_days=0
    )
    assert settings.limits.work_drain_s == 30.0


@pytest.mark.parametrize(
    ("variable", "raw", "read", "expected"),
    [
        ("METRICS_PORT", "9100", lambda s: s.observability.metrics_port, 9100),
        ("METRICS_PORT", "0", lambda s: s.observability.metrics_port, 0),
        ("METRICS_HOST", "127.0.0.1", lambda s: s.observability.metrics_host, "127.0.0.1"),
        ("QUEUE_LAG_INTERVAL_S", "2.5", lambda s: s.observability.lag_interval_s, 2.5),
        ("HEALTH_TIMEOUT_S", "0.5", lambda s: s.observability.health_timeout_s, 0.5),
        ("RETENTION_RESULTS_DAYS", "30", lambda s: s.retention.results_days, 30),
        ("RETENTION_ARCHIVES_DAYS", "14", lambda s: s.retention.archives_days, 14),
        ("RETENTION_ORIGINALS_DAYS", "7", lambda s: s.retention.originals_days, 7),
        ("RETENTION_BATCHES_DAYS", "90", lambda s: s.retention.batches_days, 90),
        ("RETENTION_BATCHES_DAYS", "8", lambda s: s.retention.batches_days, 8),
        ("RETENTION_BATCHES_DAYS", "0", lambda s: s.retention.batches_days, 0),
        ("WORK_DRAIN_S", "105", lambda s: s.limits.work_drain_s, 105.0),
    ],
)
def test_values(variable: str, raw: str, read, expected: object) -> None:
    assert read(Settings.from_env({variable: raw})) == expected


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("METRICS_PORT", "65536"),
        ("METRICS_PORT", "-1"),
        ("METRICS_PORT", "http"),
        ("QUEUE_LAG_INTERVAL_S", "0"),
        ("HEALTH_TIMEOUT_S", "61"),
        ("RETENTION_RESULTS_DAYS", "-1"),
        ("RETENTION_ARCHIVES_DAYS", "forever"),
        ("RETENTION_ORIGINALS_DAYS", "36501"),
        ("RETENTION_BATCHES_DAYS", "7"),
        ("RETENTION_BATCHES_DAYS", "1"),
        ("WORK_DRAIN_S", "0"),
        ("WORK_DRAIN_S", "3601"),
    ],
)
def test_bad_values_name_their_variable(variable: str, raw: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({variable: raw})
    assert info.value.variable == variable
