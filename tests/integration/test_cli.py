"""The console script against real NATS, PostgreSQL and S3, as an operator runs it."""

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client

from lumiku_bgremover.settings import S3Settings
from tests.integration.service import cli, service_environment, service_process

pytestmark = pytest.mark.integration

STREAMS = ("REQUESTS", "INTEGRATIONS", "WORK", "EVENTS", "DEADLETTERS")


@pytest.fixture
def service_env(
    nats_url: str, nats_namespace: str, migrated_database_url: str, s3_settings: S3Settings
) -> dict[str, str]:
    return service_environment(nats_url, nats_namespace, migrated_database_url, s3_settings)


def test_migrate_twice(service_env: dict[str, str], database_url: str) -> None:
    env = {**service_env, "DATABASE_URL": database_url}
    first = cli("migrate", env=env)
    assert first.returncode == 0, first.stderr
    assert "applied 0001_initial" in first.stdout
    second = cli("migrate", env=env)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "database is up to date"


async def test_provision_creates_streams_and_bucket(
    service_env: dict[str, str], nats_namespace: str, nc: Client
) -> None:
    first = cli("provision", env=service_env)
    assert first.returncode == 0, first.stderr
    prefix = nats_namespace.upper()
    for stream in STREAMS:
        assert f"stream {prefix}_{stream}: created" in first.stdout
        await nc.jetstream().stream_info(f"{prefix}_{stream}")
    assert f"bucket {service_env['S3_BUCKET']}: ready" in first.stdout
    second = cli("provision", env=service_env)
    assert second.returncode == 0, second.stderr
    assert second.stdout.count(": unchanged") == len(STREAMS)


def test_bad_setting_exits_2_naming_the_variable(service_env: dict[str, str]) -> None:
    result = cli("provision", env={**service_env, "WORK_PARTITIONS": "lots"})
    assert result.returncode == 2
    assert "configuration error: WORK_PARTITIONS:" in result.stderr


def test_run_refuses_an_unmigrated_database(service_env: dict[str, str], database_url: str) -> None:
    result = cli("run", env={**service_env, "DATABASE_URL": database_url})
    assert result.returncode == 1
    assert "run `lumiku-bgremover migrate` first" in result.stderr


def test_run_can_refuse_hosted_routes_without_their_key(service_env: dict[str, str]) -> None:
    routing = service_env["TIER_ROUTING"] + ",industry=segmind:birefnet-portrait"
    env = {**service_env, "TIER_ROUTING": routing, "HOSTED_WITHOUT_KEY": "error"}
    env.pop("SEGMIND_API_KEY", None)
    result = cli("run", env=env)
    assert result.returncode == 2
    assert "TIER_ROUTING" in result.stderr
    assert "segmind" in result.stderr
    assert "HOSTED_WITHOUT_KEY=local" in result.stderr


@pytest.fixture
def service(service_env: dict[str, str], tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    with service_process(service_env, tmp_path / "service.log") as process:
        yield process


async def test_run_provisions_then_stops_cleanly_on_sigterm(
    service: subprocess.Popen[str], nc: Client, nats_namespace: str
) -> None:
    info = await nc.jetstream().stream_info(f"{nats_namespace.upper()}_WORK")
    assert info.config.name == f"{nats_namespace.upper()}_WORK"
    service.send_signal(signal.SIGTERM)
    assert service.wait(timeout=30) == 0


def test_provision_refuses_a_missing_app_stream_naming_the_variables(
    service_env: dict[str, str],
) -> None:
    env = {**service_env, "INTEGRATIONS_PROVISION_STREAM": "false"}
    result = cli("provision", env=env)
    assert result.returncode == 1
    assert "AVATAR_CREATOR_STREAM" in result.stderr
    assert "INTEGRATIONS_PROVISION_STREAM=true" in result.stderr
    only = cli("provision", env={**env, "INTEGRATION_APPS": "none"})
    assert only.returncode == 0, only.stderr
    assert "_INTEGRATIONS:" not in only.stdout
    asked = cli("provision", "--integrations-stream", env=env)  # development: when asked
    assert asked.returncode == 0, asked.stderr
    assert f"stream {env['NATS_STREAM_PREFIX']}_INTEGRATIONS: created" in asked.stdout
