"""`ROLE=api` and `ROLE=worker` as separate processes: the api side takes requests and
enqueues, only the worker processes; JSON log lines carry the ids and no secret."""

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
import nats
import nats.errors
import pytest
from nats.errors import NoRespondersError

from lumiku_bgremover import billing
from lumiku_bgremover.contracts import subjects
from lumiku_bgremover.db import connect
from lumiku_bgremover.provisioning import StreamNames
from lumiku_bgremover.settings import NatsSettings, S3Settings
from lumiku_bgremover.storage import S3ObjectStore
from tests.integration.pipeline_harness import EventLog, photo
from tests.integration.service import service_environment, service_process

pytestmark = pytest.mark.integration

DEADLINE_S = 60.0
USER = "usr_roles"
FAKE_SECRETS = {"HF_TOKEN": "hf-roles-secret-token", "SEGMIND_API_KEY": "segmind-roles-key"}


async def until(check: Any, what: str, limit_s: float = DEADLINE_S) -> None:
    deadline = asyncio.get_running_loop().time() + limit_s
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"not within {limit_s} s: {what}")
        await asyncio.sleep(0.05)


async def answers_quotes(nc: nats.NATS, prefix: str) -> bool:
    try:
        await nc.request(f"{prefix}{subjects.QUOTE}", b"{}", timeout=2)
    except (NoRespondersError, nats.errors.TimeoutError):
        return False
    return True


async def pending_work(nc: nats.NATS, env: dict[str, str]) -> int:
    names = StreamNames.of(NatsSettings(stream_prefix=env["NATS_STREAM_PREFIX"]))
    info = await nc.jetstream().stream_info(names.work)
    return info.state.messages


def log_lines(path: Path) -> list[dict[str, Any]]:
    text = path.read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def env(
    nats_url: str, nats_namespace: str, migrated_database_url: str, s3_settings: S3Settings
) -> dict[str, str]:
    base = service_environment(nats_url, nats_namespace, migrated_database_url, s3_settings)
    return {**base, **FAKE_SECRETS, "LOG_FORMAT": "json"}


@pytest.fixture
async def client(env: dict[str, str]) -> AsyncIterator[tuple[nats.NATS, EventLog]]:
    nc = await nats.connect(env["NATS_URL"])
    events = EventLog(prefix=env["NATS_SUBJECT_PREFIX"])
    await nc.subscribe(f"{env['NATS_SUBJECT_PREFIX']}bgremove.>", cb=events.on_message)
    await nc.flush()
    try:
        yield nc, events
    finally:
        await nc.close()


async def request_batch(env: dict[str, str], s3: S3Settings, nc: nats.NATS) -> None:
    async with connect(env["DATABASE_URL"]) as conn:
        await billing.grant(conn, USER, 100, idempotency_key="grant:roles")
    store = S3ObjectStore.from_settings(s3)
    images = []
    for i in range(3):
        key = f"originals/{USER}/p{i}.png"
        await store.put_bytes(key, photo(i), "image/png")
        images.append({"filename": f"p{i}.png", "ref": {"bucket": s3.bucket, "key": key}})
    body = {"request_id": "roles-1", "user_id": USER, "tier": "basic", "images": images}
    subject = env["NATS_SUBJECT_PREFIX"] + subjects.BATCH_REQUESTED
    await nc.jetstream().publish(subject, msgspec.json.encode(body), timeout=10)


async def test_api_and_worker_roles_split_the_work(
    env: dict[str, str],
    client: tuple[nats.NATS, EventLog],
    s3_settings: S3Settings,
    tmp_path: Path,
) -> None:
    nc, events = client
    prefix = env["NATS_SUBJECT_PREFIX"]
    api_log, worker_log = tmp_path / "api.log", tmp_path / "worker.log"
    with service_process({**env, "ROLE": "api"}, api_log) as api:
        assert await answers_quotes(nc, prefix)
        await request_batch(env, s3_settings, nc)
        await events.wait(lambda log: bool(log.of(subjects.BATCH_ACCEPTED)), DEADLINE_S)
        assert await pending_work(nc, env) == 3  # enqueued, and nobody here takes work
        assert events.of(subjects.ITEM_DONE) == []

        worker_env = {**env, "ROLE": "worker", "METRICS_PORT": "0"}
        with service_process(worker_env, worker_log):
            await events.wait(lambda log: bool(log.of(subjects.BATCH_COMPLETED)), DEADLINE_S)
            api.kill()
            api.wait(10)

            async def api_gone() -> bool:
                return not await answers_quotes(nc, prefix)

            await until(api_gone, "the worker alone answers no quote")

    [completed] = events.of(subjects.BATCH_COMPLETED)
    assert (completed["status"], completed["succeeded"]) == ("completed", 3)

    api_lines, worker_lines = log_lines(api_log), log_lines(worker_log)  # every line is JSON
    assert any("ready (role api)" in line["message"] for line in api_lines)
    assert any("ready (role worker)" in line["message"] for line in worker_lines)
    done = [line for line in worker_lines if line["message"].endswith(" done")]
    assert len(done) == 3
    for line in done:
        assert line["batch_id"] == completed["batch_id"]
        assert line["item_id"].startswith(completed["batch_id"])
        assert line["user_id"] == USER
        assert line["item_id"] in line["message"]
    secrets = [*FAKE_SECRETS.values(), s3_settings.secret_key]
    password = urlsplit(env["DATABASE_URL"]).password
    secrets += [password] if password else []
    for text in (api_log.read_text(), worker_log.read_text()):
        assert not any(secret in text for secret in secrets)
        assert "PNG" not in text  # no image bytes
