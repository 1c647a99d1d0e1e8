"""The console script against real NATS, PostgreSQL and S3, as an operator runs it."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client

from lumiku_bgremover.settings import S3Settings

pytestmark = pytest.mark.integration


@pytest.fixture
def service_env(
    nats_url: str, nats_namespace: str, migrated_database_url: str, s3_settings: S3Settings
) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "NATS_URL": nats_url,
        "NATS_SUBJECT_PREFIX": f"{nats_namespace}.",
        "NATS_STREAM_PREFIX": nats_namespace.upper(),
        "DATABASE_URL": migrated_database_url,
        "S3_ENDPOINT": s3_settings.endpoint,
        "S3_ACCESS_KEY": s3_settings.access_key,
        "S3_SECRET_KEY": s3_settings.secret_key,
        "S3_BUCKET": s3_settings.bucket,
        "S3_REGION": s3_settings.region,
        "S3_SECURE": str(s3_settings.secure).lower(),
    }


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lumiku_bgremover.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


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
    for stream in ("REQUESTS", "INTEGRATIONS", "WORK", "EVENTS"):
        assert f"stream {prefix}_{stream}: created" in first.stdout
        await nc.jetstream().stream_info(f"{prefix}_{stream}")
    assert f"bucket {service_env['S3_BUCKET']}: ready" in first.stdout
    second = cli("provision", env=service_env)
    assert second.returncode == 0, second.stderr
    assert second.stdout.count(": unchanged") == 4


def test_bad_setting_exits_2_naming_the_variable(service_env: dict[str, str]) -> None:
    result = cli("provision", env={**service_env, "WORK_PARTITIONS": "lots"})
    assert result.returncode == 2
    assert "configuration error: WORK_PARTITIONS:" in result.stderr


def test_run_refuses_an_unmigrated_database(service_env: dict[str, str], database_url: str) -> None:
    result = cli("run", env={**service_env, "DATABASE_URL": database_url})
    assert result.returncode == 1
    assert "run `lumiku-bgremover migrate` first" in result.stderr


@pytest.fixture
def service(service_env: dict[str, str], tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    log = (tmp_path / "service.log").open("w+")
    process = subprocess.Popen(
        [sys.executable, "-m", "lumiku_bgremover.cli", "run"],
        env=service_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_line(tmp_path / "service.log", "lumiku-bgremover ready", process)
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        log.close()


def wait_for_line(
    path: Path, text: str, process: subprocess.Popen[str], limit_s: float = 60
) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if text in path.read_text():
            return
        if process.poll() is not None:
            pytest.fail(f"service exited {process.returncode}:\n{path.read_text()}")
        time.sleep(0.1)
    pytest.fail(f"no {text!r} within {limit_s} s:\n{path.read_text()}")


async def test_run_provisions_then_stops_cleanly_on_sigterm(
    service: subprocess.Popen[str], nc: Client, nats_namespace: str
) -> None:
    info = await nc.jetstream().stream_info(f"{nats_namespace.upper()}_WORK")
    assert info.config.name == f"{nats_namespace.upper()}_WORK"
    service.send_signal(signal.SIGTERM)
    assert service.wait(timeout=30) == 0
