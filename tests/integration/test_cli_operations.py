"""`queue`, `deadletters`, `cleanup` and `provision`'s expiry rules, as an operator runs them."""

import asyncio
import json

import pytest

from lumiku_bgremover.settings import S3Settings
from tests.fixtures.s3 import S3Server
from tests.integration.service import cli, service_environment

pytestmark = pytest.mark.integration


@pytest.fixture
def service_env(
    nats_url: str, nats_namespace: str, migrated_database_url: str, s3_settings: S3Settings
) -> dict[str, str]:
    env = service_environment(nats_url, nats_namespace, migrated_database_url, s3_settings)
    return {**env, "WORK_PARTITIONS": "2", "RETENTION_RESULTS_DAYS": "30"}


async def test_provision_sets_the_expiry_rules(
    service_env: dict[str, str], s3_server: S3Server
) -> None:
    result = cli("provision", env=service_env)
    assert result.returncode == 0, result.stderr
    assert "(expiry: results/ 30 d, engine-inputs/ 1 d)" in result.stdout
    bucket = service_env["S3_BUCKET"]
    config = await asyncio.to_thread(s3_server.client().get_bucket_lifecycle, bucket)
    assert config is not None
    assert [(r.rule_filter.prefix, r.expiration.days) for r in config.rules if r.expiration] == [
        ("results/", 30),
        ("engine-inputs/", 1),
    ]


def test_queue_pause_stats_resume(service_env: dict[str, str], nats_namespace: str) -> None:
    assert cli("provision", env=service_env).returncode == 0
    paused = cli("queue", "pause", "--lane", "bulk", "--for", "3600", env=service_env)
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.split() == [
        "paused", f"{nats_namespace.upper()}_WORK_BULK_0",
        "paused", f"{nats_namespace.upper()}_WORK_BULK_1",
    ]  # fmt: skip
    stats = json.loads(cli("queue", "stats", "--json", env=service_env).stdout)
    assert {c["name"] for c in stats["consumers"] if c["paused"]} == {
        f"{nats_namespace.upper()}_WORK_BULK_0",
        f"{nats_namespace.upper()}_WORK_BULK_1",
    }
    assert stats["lag_total"] == 0
    assert cli("queue", "resume", env=service_env).returncode == 0
    text = cli("queue", "stats", env=service_env).stdout
    assert "yes" not in text
    assert "lag total: 0" in text


def test_queue_pause_refuses_a_time_without_zone(service_env: dict[str, str]) -> None:
    assert cli("provision", env=service_env).returncode == 0
    result = cli("queue", "pause", "--until", "2030-01-01T00:00:00", env=service_env)
    assert result.returncode == 2
    assert "time zone" in result.stderr


def test_deadletters_list_and_replay_usage(service_env: dict[str, str]) -> None:
    assert cli("provision", env=service_env).returncode == 0
    listed = cli("deadletters", "list", env=service_env)
    assert (listed.returncode, listed.stdout.strip()) == (0, "no dead letters")
    assert cli("deadletters", "replay", env=service_env).returncode == 2
    missing = cli("deadletters", "replay", "42", env=service_env)
    assert missing.returncode == 1
    assert "no such dead letter: 42" in missing.stderr


def test_cleanup(service_env: dict[str, str]) -> None:
    off = cli("cleanup", env=service_env)
    assert (off.returncode, off.stdout.strip()) == (
        0, "retention is off (RETENTION_BATCHES_DAYS=0): nothing deleted"
    )  # fmt: skip
    assert cli("cleanup", "--days", "3", env=service_env).returncode == 2
    dry = cli("cleanup", "--dry-run", "--json", env={**service_env, "RETENTION_BATCHES_DAYS": "30"})
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["batches"] == 0
