"""`lumiku-bgremover run` as an operator starts it, routing tiers by its start-up log.

With both API keys (endpoints on the fake provider servers) and no TIER_ROUTING, it
starts on the spec's default routing; with no key it starts with every tier on the
local engine (a tiny ONNX model placed in MODEL_CACHE_DIR stands in for the weights)
and its log says so.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lumiku_bgremover.engine_settings import DEFAULT_ROUTES
from lumiku_bgremover.engines.fakes.scenario import hosted_fakes
from lumiku_bgremover.settings import S3Settings
from tests.integration.service import service_environment, service_process
from tests.unit.test_engines_suite import tiny_model

pytestmark = pytest.mark.integration

#: Set by the test environment; each test says which keys it gives.
ENGINE_VARIABLES = ("TIER_ROUTING", "HF_TOKEN", "SEGMIND_API_KEY")


@pytest.fixture
def service_env(
    nats_url: str, nats_namespace: str, migrated_database_url: str, s3_settings: S3Settings
) -> dict[str, str]:
    env = service_environment(nats_url, nats_namespace, migrated_database_url, s3_settings)
    return {name: value for name, value in env.items() if name not in ENGINE_VARIABLES}


def started(env: dict[str, str], log_path: Path) -> str:
    """The start-up log of `run` up to "ready" (the process is killed after)."""
    with service_process(env, log_path):
        return log_path.read_text()


def test_with_keys_run_starts_on_the_spec_default_routing(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    with hosted_fakes() as fakes:
        hf, sg = fakes.huggingface, fakes.segmind
        env = {
            **service_env, "HF_TOKEN": hf.token, "HF_ENDPOINT": f"{hf.url}/hf-inference",
            "HF_ROUTER_URL": hf.url, "SEGMIND_API_KEY": sg.api_key, "SEGMIND_ENDPOINT": sg.url,
        }  # fmt: skip
        log = started(env, tmp_path / "service.log")
        assert hf.requests == sg.requests == []  # hosted engines need no warm-up call
    for tier, route in DEFAULT_ROUTES.items():
        assert f"tier {tier.value}: {route.engine}:{route.model}\n" in log, log
    assert "local engine" not in log
    assert "lumiku-bgremover ready (role all)" in log


def test_without_keys_run_starts_with_every_tier_on_the_local_engine(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    tiny_model(models / "u2net.onnx", side=320)  # U2-Net's input size, placed by hand
    env = {**service_env, "MODEL_CACHE_DIR": str(models), "KEYLESS_LOCAL_MODEL": "u2net"}
    log = started(env, tmp_path / "service.log")
    assert (
        "no API key for huggingface, segmind: tier(s) basic, standard, professional, industry "
        "run on the local engine (u2net) instead (HOSTED_WITHOUT_KEY=local)"
    ) in log, log
    for tier in DEFAULT_ROUTES:
        assert f"tier {tier.value}: local:u2net\n" in log, log
    assert "loading local model u2net" in log
    assert "lumiku-bgremover ready (role all)" in log
