"""The running service for end-to-end tests: `lumiku-bgremover run` as a subprocess."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from lumiku_bgremover.settings import S3Settings
from tests.integration.service import service_environment, service_process


@pytest.fixture
def service_env(
    nats_url: str, nats_namespace: str, migrated_database_url: str, s3_settings: S3Settings,
    tmp_path: Path,
) -> Iterator[dict[str, str]]:  # fmt: skip
    env = service_environment(nats_url, nats_namespace, migrated_database_url, s3_settings)
    with service_process(env, tmp_path / "service.log"):
        yield env
