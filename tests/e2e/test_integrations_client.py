"""Avatar Creator, Pose Generator, Upscaler and a mail relay as they meet the running
service: plain nats-py and boto3 clients publishing exactly as those apps would, the
service (`lumiku-bgremover run`, and `notifier`) as subprocesses, real NATS, PostgreSQL,
S3 and a local SMTP server. The clients know only the subjects and JSON bodies."""

import asyncio
import io
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from nats.js.errors import NotFoundError
from PIL import Image

from lumiku_bgremover import billing
from lumiku_bgremover.db import connect
from lumiku_bgremover.settings import S3Settings
from tests.e2e.test_contract_client import Inbox, s3_client
from tests.fixtures._common import free_port
from tests.fixtures.smtp import SmtpServer
from tests.integration.service import cli, service_environment, service_process, wait_for_line

pytestmark = pytest.mark.integration

EVENTS = ("bgremove.batch.accepted", "bgremove.request.rejected", "bgremove.item.done",
          "bgremove.item.failed", "bgremove.batch.completed", "upscaler.requested")  # fmt: skip


class Apps:
    """The other apps: they upload, publish events and listen to ours."""

    def __init__(self, env: dict[str, str], nc: nats.NATS, inbox: Inbox) -> None:
        self.env, self.nc, self.inbox = env, nc, inbox
        self.prefix, self.s3 = env["NATS_SUBJECT_PREFIX"], s3_client(env)

    async def upload(
        self, user: str, name: str, size: tuple[int, int] = (40, 30)
    ) -> dict[str, str]:
        out = io.BytesIO()
        Image.new("RGB", size, (30, 120, 200)).save(out, format="PNG")
        key, bucket = f"originals/{user}/{name}", self.env["S3_BUCKET"]
        await asyncio.to_thread(self.s3.put_object, Bucket=bucket, Key=key, Body=out.getvalue())
        return {"bucket": bucket, "key": key}

    async def publish(self, subject: str, body: dict[str, Any] | bytes, msg_id: str) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        await self.nc.jetstream().publish(self.prefix + subject, data,
                                          headers={"Nats-Msg-Id": msg_id})  # fmt: skip

    async def grant(self, user: str, amount: int) -> None:
        async with connect(self.env["DATABASE_URL"]) as conn:  # an operator grants credits
            await billing.grant(conn, user, amount, idempotency_key=f"grant:{user}")

    async def balance(self, user: str) -> int:
        async with connect(self.env["DATABASE_URL"]) as conn:
            return await billing.balance(conn, user)

    def cli(self, *args: str) -> str:
        result = cli(*args, env=self.env)
        assert result.returncode == 0, result.stderr
        return result.stdout

    async def request(self, subject: str, body: dict[str, Any]) -> dict[str, Any]:
        reply = await self.nc.request(self.prefix + subject, json.dumps(body).encode(), timeout=10)
        answer: dict[str, Any] = json.loads(reply.data)
        return answer

    def rejected_ids(self) -> set[str]:
        """Event ids of rejected requests (`<app>:<event id>`)."""
        found = self.inbox.of("bgremove.request.rejected")
        return {e["request_id"].split(":", 1)[1] for e in found if e["request_id"]}

    async def served(self, subject: str, marker: str) -> None:
        """Publish a malformed event after the others on `subject`; its rejection proves
        everything before it was served (one consumer per subject, in order)."""
        body = {"event_id": marker, "user_id": "usr_probe"}
        await self.publish(subject, body, marker)
        async with asyncio.timeout(60):
            while f"{marker}" not in self.rejected_ids():
                self.inbox.changed.clear()
                await self.inbox.changed.wait()


@asynccontextmanager
async def apps_on(env: dict[str, str]) -> AsyncIterator[Apps]:
    nc = await nats.connect(env["NATS_URL"])
    inbox = Inbox(env["NATS_SUBJECT_PREFIX"])
    for subject in EVENTS:
        await nc.subscribe(env["NATS_SUBJECT_PREFIX"] + subject, cb=inbox.on_message)
    await nc.flush()
    try:
        yield Apps(env, nc, inbox)
    finally:
        await nc.close()


@pytest.fixture
async def apps(service_env: dict[str, str]) -> AsyncIterator[Apps]:
    async with apps_on(service_env) as found:
        yield found


#: Each app's inbound subject, by the prefix of its binding variables.
APP_SUBJECTS = {"AVATAR_CREATOR": "avatar.project.completed", "POSE_GENERATOR": "pose.generated",
                "UPSCALER": "upscaler.completed"}  # fmt: skip


@pytest.fixture
async def own_stream_apps(
    nats_url: str, nats_namespace: str, migrated_database_url: str, s3_settings: S3Settings,
    tmp_path: Path,
) -> AsyncIterator[Apps]:  # fmt: skip
    """The production layout: each app's events on a stream the app owns (made here with
    plain nats-py), the service told their names and its durable names, and not allowed
    to make a stream for them."""
    env = service_environment(nats_url, nats_namespace, migrated_database_url, s3_settings)
    env["INTEGRATIONS_PROVISION_STREAM"] = "false"
    nc = await nats.connect(nats_url)
    for app, subject in APP_SUBJECTS.items():
        stream = f"{nats_namespace.upper()}_APP_{app}"
        await nc.jetstream().add_stream(
            name=stream, subjects=[env["NATS_SUBJECT_PREFIX"] + subject]
        )
        env[f"{app}_STREAM"], env[f"{app}_DURABLE"] = stream, f"bgremove-{app.lower()}"
    await nc.close()
    with service_process(env, tmp_path / "service.log"):
        async with apps_on(env) as found:
            yield found


async def project(apps: Apps, user: str, event_id: str, count: int, **extra: Any) -> dict[str, Any]:
    avatars = [{"avatar_id": f"av_{i}", "image": await apps.upload(user, f"{event_id}-{i}.png")}
               for i in range(count)]  # fmt: skip
    return {"event_id": event_id, "user_id": user, "project_id": f"proj_{event_id}",
            "avatars": avatars, "style": "watercolour", **extra}  # fmt: skip


async def test_an_avatar_project_becomes_one_discounted_batch_once(
    apps: Apps, tmp_path: Path
) -> None:
    await apps.grant("usr_ayu", 1000)
    event = await project(apps, "usr_ayu", "evt-24", 24, removal={"tier": "standard"})
    await apps.publish("avatar.project.completed", event, "evt-24")
    await apps.inbox.until("bgremove.batch.completed")

    [accepted] = apps.inbox.of("bgremove.batch.accepted")
    [accepted_id] = apps.inbox.event_ids("bgremove.batch.accepted")
    assert (accepted["count"], accepted["discount_pct"], accepted["credits_charged"]) == (
        24, 5, 183)  # fmt: skip
    assert accepted["correlation"] == {"app": "avatar-creator", "ref": "proj_evt-24"}
    done = apps.inbox.of("bgremove.item.done")
    assert sorted(e["source_id"] for e in done) == sorted(f"av_{i}" for i in range(24))
    assert {e["correlation"]["ref"] for e in done} == {"proj_evt-24"}
    assert {e["correlation"]["app"] for e in done} == {"avatar-creator"}
    assert len(apps.inbox.of("bgremove.batch.completed")) == 1

    await apps.publish("avatar.project.completed", event, "evt-24-redelivered")
    await apps.publish("avatar.project.completed", b"{not json", "garbage-1")
    await apps.served("avatar.project.completed", "probe-1")
    codes = [e["code"] for e in apps.inbox.of("bgremove.request.rejected")]
    assert codes == ["invalid_request", "invalid_request"]  # the garbage, the probe
    assert len(apps.inbox.of("bgremove.item.done")) == 24
    assert len(apps.inbox.of("bgremove.batch.completed")) == 1
    # the same request again re-announces its acceptance under the same event id (a
    # stream stores it once); it creates no second batch
    assert apps.inbox.event_ids("bgremove.batch.accepted") == {accepted_id}
    log = (tmp_path / "service.log").read_text()  # the redelivery did reach the service
    assert log.count("avatar-creator event evt-24 becomes request avatar-creator:evt-24") == 2
    assert await apps.balance("usr_ayu") == 1000 - 183


async def test_settings_pose_and_both_upscaler_pipelines(apps: Apps) -> None:
    user = "usr_bea"
    await apps.grant(user, 1000)
    apps.cli(
        "settings", "set", "--user", user, "--app", "avatar-creator", "--on", "--tier", "basic"
    )
    await apps.publish("avatar.project.completed", await project(apps, user, "e-on", 3), "e-on")
    await apps.inbox.until("bgremove.batch.completed")
    [accepted] = apps.inbox.of("bgremove.batch.accepted")
    assert (accepted["tier"], accepted["count"], accepted["credits_charged"]) == ("basic", 3, 9)
    done = apps.inbox.of("bgremove.item.done")
    assert sorted(e["source_id"] for e in done) == ["av_0", "av_1", "av_2"]
    assert [e["correlation"] for e in done] == [{"app": "avatar-creator", "ref": "proj_e-on"}] * 3
    apps.cli("settings", "set", "--user", user, "--app", "avatar-creator", "--off")
    await apps.publish("avatar.project.completed", await project(apps, user, "e-off", 3), "e-off")
    await apps.served("avatar.project.completed", "probe-2")
    assert len(apps.inbox.of("bgremove.batch.accepted")) == 1
    assert len(apps.inbox.of("bgremove.item.done")) == 3
    assert "e-off" not in apps.rejected_ids()  # nothing published for it at all
    assert await apps.balance(user) == 1000 - 9

    reply = await apps.request("bgremove.settings.set", {"user_id": user, "setting": {
        "app": "upscaler", "enabled": False, "tier": "professional"}})  # fmt: skip
    assert (reply["status"], reply["settings"][0]["tier"]) == ("ok", "professional")
    reply = await apps.request("bgremove.settings.get", {"user_id": user, "app": "upscaler"})
    assert [s["tier"] for s in reply["settings"]] == ["professional"]
    reply = await apps.request("bgremove.settings.get", {"user_id": "usr_other"})
    assert [s["enabled"] for s in reply["settings"]] == [False] * 3  # only the owner's
    reply = await apps.request("bgremove.settings.set", {"user_id": user, "setting": {}})
    assert (reply["status"], reply["code"]) == ("error", "invalid_request")

    apps.cli("subscription", "set", "--user", user, "--plan", "starter")
    apps.cli("settings", "set", "--user", user, "--app", "pose-generator", "--on",
             "--then-upscale", "4")  # fmt: skip
    shown = json.loads(apps.cli("settings", "show", "--user", user, "--json"))
    assert [(s["app"], s["enabled"]) for s in shown["settings"]] == [
        ("avatar-creator", False), ("pose-generator", True), ("upscaler", False)]  # fmt: skip
    pose = {"event_id": "pose-1", "user_id": user, "pose_id": "pose_1",
            "generation_id": "gen_1", "image": await apps.upload(user, "pose.png")}  # fmt: skip
    await apps.publish("pose.generated", pose, "pose-1")
    await apps.inbox.until("upscaler.requested")
    accepted = apps.inbox.of("bgremove.batch.accepted")[-1]
    assert (accepted["pricing_type"], accepted["credits_charged"]) == ("subscription", 0)
    [handover] = apps.inbox.of("upscaler.requested")
    pose_done = apps.inbox.of("bgremove.item.done")[-1]
    assert handover["image"] == pose_done["result"]
    assert handover["scale"] == 4
    assert handover["correlation"] == pose_done["correlation"] == {
        "app": "pose-generator", "ref": "gen_1"}  # fmt: skip
    assert [e["source_id"] for e in done_for(apps, "gen_1")] == ["pose_1"]

    upscaled = {"event_id": "ups-1", "user_id": user, "job_id": "job_1", "scale": 4,
                "result": await apps.upload(user, "big.png", (160, 120)),
                "then": {"service": "bgremove", "tier": "basic"},
                "correlation": handover["correlation"]}  # fmt: skip
    done_before = len(apps.inbox.of("bgremove.item.done"))
    await apps.publish("upscaler.completed", upscaled, "ups-1")
    await apps.inbox.until("bgremove.item.done", done_before + 1)
    last = apps.inbox.of("bgremove.item.done")[-1]
    assert (last["source_id"], last["width"], last["correlation"]) == (
        "job_1", 160, handover["correlation"])  # fmt: skip
    assert len(apps.inbox.of("upscaler.requested")) == 1
    assert await apps.balance(user) == 1000 - 9  # both images on the starter quota

    # starter does not cover professional: the same setting at that tier pays in credits
    apps.cli("settings", "set", "--user", user, "--app", "pose-generator", "--on",
             "--tier", "professional")  # fmt: skip
    pose = {**pose, "event_id": "pose-2", "pose_id": "pose_2", "generation_id": "gen_2"}
    await apps.publish("pose.generated", pose, "pose-2")
    await apps.inbox.until("bgremove.item.done", done_before + 2)
    accepted = apps.inbox.of("bgremove.batch.accepted")[-1]
    assert (accepted["pricing_type"], accepted["tier"], accepted["credits_charged"]) == (
        "credits", "professional", 15)  # fmt: skip
    assert [e["source_id"] for e in done_for(apps, "gen_2")] == ["pose_2"]
    assert await apps.balance(user) == 1000 - 9 - 15


def done_for(apps: Apps, ref: str) -> list[dict[str, Any]]:
    return [e for e in apps.inbox.of("bgremove.item.done") if e["correlation"]["ref"] == ref]


async def test_apps_own_streams_and_bad_events_on_every_subject(
    own_stream_apps: Apps, tmp_path: Path
) -> None:
    apps, user = own_stream_apps, "usr_cy"
    env, js = apps.env, apps.nc.jetstream()
    with pytest.raises(NotFoundError):  # not asked to: no stream of ours for their events
        await js.stream_info(env["NATS_STREAM_PREFIX"] + "_INTEGRATIONS")
    for app, subject in APP_SUBJECTS.items():
        info = await js.consumer_info(env[f"{app}_STREAM"], env[f"{app}_DURABLE"])
        assert info.config.filter_subject == apps.prefix + subject
    await apps.grant(user, 100)
    image = await apps.upload(user, "pose.png")
    bad = [
        ("pose.generated", b"\xff{ not json", "garbage-pose"),
        ("pose.generated", {"event_id": "bad-pose", "user_id": user, "pose_id": 7,
                            "image": image, "removal": {}}, "bad-pose"),
        ("upscaler.completed", {"event_id": "bad-ups", "user_id": user, "job_id": "j1",
                                "result": {"bucket": 1}, "then": {"service": "bgremove"}},
         "bad-ups"),
        ("upscaler.completed", {"event_id": "foreign-ups", "user_id": user, "job_id": "j2",
                                "result": image, "then": {"service": "captioner"}},
         "foreign-ups"),
        ("avatar.project.completed", {"event_id": "bad-av", "user_id": user,
                                      "project_id": "p", "avatars": "none"}, "bad-av"),
    ]  # fmt: skip
    for subject, body, msg_id in bad:
        await apps.publish(subject, body, msg_id)
    for subject in APP_SUBJECTS.values():
        await apps.served(subject, f"probe-{subject}")
    rejected = apps.inbox.of("bgremove.request.rejected")
    assert {e["code"] for e in rejected} == {"invalid_request"}
    assert {"bad-pose", "bad-ups", "bad-av"} <= apps.rejected_ids()
    assert len(rejected) == 3 + 1 + 3  # the three, the garbage, the probes
    assert "foreign-ups" not in apps.rejected_ids()  # not ours: logged, not answered
    log = (tmp_path / "service.log").read_text()
    assert "foreign-ups starts nothing (code=not_addressed_to_us)" in log
    assert "malformed pose-generator event pose-generator:bad-pose (code=invalid_request)" in log
    assert apps.inbox.of("bgremove.batch.accepted") == []
    assert await apps.balance(user) == 100

    good = {"event_id": "good-pose", "user_id": user, "pose_id": "pose_3",
            "generation_id": "gen_3", "image": image, "removal": {"tier": "basic"}}  # fmt: skip
    await apps.publish("pose.generated", good, "good-pose")  # the consumer still serves
    await apps.inbox.until("bgremove.item.done")
    assert [e["correlation"] for e in apps.inbox.of("bgremove.item.done")] == [
        {"app": "pose-generator", "ref": "gen_3"}]  # fmt: skip
    assert await apps.balance(user) == 100 - 3


@pytest.mark.parametrize("smtp_server", [2], indirect=True)
async def test_one_email_per_completed_batch(
    apps: Apps, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    smtp = smtp_server.settings
    env = {
        **apps.env,
        "SMTP_HOST": smtp.host,
        "SMTP_PORT": str(smtp.port),
        "SMTP_USER": smtp.user or "",
        "SMTP_PASSWORD": smtp.password or "",
        "SMTP_CA_FILE": str(smtp.ca_file),
        "NOTIFY_RETRY_S": "0.2",
        "METRICS_PORT": str(free_port()),
    }  # fmt: skip  (its own: `run` holds the other)
    log_path = tmp_path / "notifier.log"
    with log_path.open("w+") as log:
        notifier = subprocess.Popen(  # noqa: ASYNC220 - a service, left running
            [sys.executable, "-m", "lumiku_bgremover.cli", "notifier"],
            env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            wait_for_line(log_path, "notifier ready", notifier)
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{env['METRICS_PORT']}"
            ) as http:
                assert (await http.get("/livez")).status_code == 200
                ready = await http.get("/readyz")
                assert ready.json()["checks"] == {"nats": "ok", "postgres": "ok"}, ready.text
            await run_mailed_batch(apps)
            [mail] = await asyncio.to_thread(smtp_server.mailbox.wait_for, 1, 60)
            assert mail["To"] == "ayu@example.com"
            text = mail.get_payload()
            assert isinstance(text, str)
            assert "2 in all, 2 done, 0 failed" in text
            assert "6 charged, 0 refunded" in text
            assert "Download all results (ZIP): http" in text
            assert smtp_server.mailbox.refused == 2
            [completed] = apps.inbox.of("bgremove.batch.completed")
            await apps.publish("bgremove.batch.completed", completed, "completed-again")
            await sent_row_settles(apps, completed["batch_id"])
            assert len(smtp_server.mailbox.messages) == 1
        finally:
            notifier.kill()
            notifier.wait(10)


async def run_mailed_batch(apps: Apps) -> None:
    await apps.grant("usr_mail", 100)
    removal = {"tier": "basic", "notify_email": "ayu@example.com"}
    event = await project(apps, "usr_mail", "evt-mail", 2, removal=removal)
    await apps.publish("avatar.project.completed", event, "evt-mail")
    await apps.inbox.until("bgremove.batch.completed")


async def sent_row_settles(apps: Apps, batch_id: str) -> None:
    """The notifier consumer has no message pending (the redelivery was handled)."""
    js = apps.nc.jetstream()
    stream = apps.env["NATS_STREAM_PREFIX"] + "_EVENTS"
    async with asyncio.timeout(30):
        while True:
            info = await js.consumer_info(stream, stream + "_NOTIFIER")
            if info.num_pending == 0 and info.num_ack_pending == 0:
                break
            await asyncio.sleep(0.05)  # polling the server's state, bounded by the timeout
    async with connect(apps.env["DATABASE_URL"]) as conn:
        row = await conn.fetchrow(
            "SELECT attempts, sent_at FROM batch_notifications WHERE batch_id = $1", batch_id
        )
    assert row is not None
    assert (row["attempts"], row["sent_at"] is not None) == (3, True)
