"""NATS security: every authentication option of the service against a real nats-server,
and the running service under exactly the permissions `docs/nats-permissions.md` lists.

No fault is injected (hence `tests/integration`): each test starts its own nats-server
with the authorization and TLS it needs (a test CA from `trustme`; an operator, account
and user signed here, for the `.creds` case), the service as `lumiku-bgremover run`, and
plays a client app with plain nats-py under the client permissions of the same page.
"""

from __future__ import annotations

import asyncio
import gc
import ssl
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client as Nats
from nats.aio.msg import Msg

from lumiku_bgremover import messaging
from lumiku_bgremover.contracts import subjects
from lumiku_bgremover.permissions import (
    client_permissions,
    provision_permissions,
    run_permissions,
    service_permissions,
)
from lumiku_bgremover.pipeline.dependencies import jetstream_probe
from lumiku_bgremover.provisioning import StreamNames
from lumiku_bgremover.settings import S3Settings, Settings
from lumiku_bgremover.storage import build_object_store
from tests.fixtures.nats_auth import Operator, TlsFiles, token_config, users_config
from tests.integration.pipeline_harness import Client, EventLog, batch_request, photo
from tests.integration.service import cli, service_environment
from tests.reliability.harness import NatsNode, Service, eventually, services

pytestmark = pytest.mark.integration

USER = "usr_secure"
VIOLATION = "Permissions Violation"


@asynccontextmanager
async def nats_server(workdir: Path, config_text: str) -> AsyncIterator[NatsNode]:
    """A private nats-server with JetStream and the given authorization/TLS blocks."""
    node = NatsNode(workdir, config=config_text)
    await node.start()
    try:
        yield node
    finally:
        node.kill()


async def refused(url: str, **options: Any) -> BaseException:
    """The error of a connection the server must refuse (no reconnects, fails fast).

    nats-py leaves the refused socket to the garbage collector: it is collected here,
    its ResourceWarning ignored, so that it is not reported against a later test.
    """
    try:
        nc = await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=1,
                                connect_timeout=5, error_cb=_quiet, **options)  # fmt: skip
    except Exception as error:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
        return error
    await nc.close()
    raise AssertionError(f"{url} accepted a connection it should refuse ({options})")


async def _quiet(_error: Exception) -> None:
    return


async def broker_round_trip(settings: Settings, nc: Nats) -> bytes:
    """A request sent by the service's FastStream broker and answered by `nc`."""

    async def echo(msg: Msg) -> None:
        await msg.respond(b"echo:" + msg.data)

    await nc.subscribe("security.echo", cb=echo)
    await nc.flush()
    broker = messaging.build_broker(settings.nats)
    await broker.connect()
    try:
        reply = await broker.request(b"hello", "security.echo", timeout=5)
        return bytes(reply.body)
    finally:
        await broker.stop()


#: Each way the service can authenticate: the server's config, the service's environment
#: (besides NATS_URL), and what a connection without those settings gets instead.
AUTH_CASES = ["user-password", "token", "creds", "tls-ca", "tls-url", "mutual-tls"]
#: What each case's server tells a client without the case's settings (one of them).
REFUSALS = {
    "user-password": ("Authorization Violation",),
    "token": ("Authorization Violation",),
    "creds": ("Authorization Violation",),
    "tls-ca": ("CERTIFICATE_VERIFY_FAILED",),
    "tls-url": ("CERTIFICATE_VERIFY_FAILED",),
    # TLS 1.3: the server's alert, or the reset or broken pipe that follows it, whichever
    # the client meets first (the server's log says why: see the test)
    "mutual-tls": ("TLSV13_ALERT_CERTIFICATE_REQUIRED", "ConnectionResetError", "BrokenPipeError"),
}


def auth_case(case: str, workdir: Path, tls: TlsFiles) -> tuple[str, dict[str, str]]:
    """(server config, service environment) of one authentication case."""
    creds = workdir / "service.creds"
    if case == "user-password":
        return users_config({"svc": ("pw-of-svc", None)}), {
            "NATS_USER": "svc", "NATS_PASSWORD": "pw-of-svc"}  # fmt: skip
    if case == "token":
        return token_config("tok-of-svc"), {"NATS_TOKEN": "tok-of-svc"}
    if case == "creds":
        operator = Operator.create()
        creds.write_text(operator.user_creds("svc"))
        return operator.server_config(workdir), {"NATS_CREDS": str(creds)}
    if case in {"tls-ca", "tls-url"}:
        return tls.server_config(), {"NATS_TLS_CA": str(tls.ca)}
    return tls.server_config(verify_clients=True), {
        "NATS_TLS_CA": str(tls.ca), "NATS_TLS_CERT": str(tls.client_cert),
        "NATS_TLS_KEY": str(tls.client_key)}  # fmt: skip


def trusting(tls: TlsFiles) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(tls.ca))


async def refusal_without_settings(case: str, url: str, tls: TlsFiles) -> BaseException:
    """What a client gets that has everything but the case's own setting."""
    if case in {"tls-ca", "tls-url"}:
        return await refused(url)  # the system's trust store does not know the test CA
    if case == "mutual-tls":
        return await refused(url, tls=trusting(tls))  # no client certificate
    return await refused(url)


@pytest.mark.parametrize("case", AUTH_CASES)
async def test_every_authentication_option_connects_both_kinds_of_connection(
    case: str, tmp_path: Path
) -> None:
    tls = TlsFiles.create(tmp_path / "tls")
    config, auth_env = auth_case(case, tmp_path, tls)
    async with nats_server(tmp_path / "nats", config) as node:
        url = node.url.replace("nats://", "tls://") if case == "tls-url" else node.url
        refusal = await refusal_without_settings(case, url, tls)
        if case == "mutual-tls":  # the server says why (its log line may follow the alert)
            reason = "didn't provide a certificate"
            await eventually(lambda: reason in node.proc.log(), 10, "the server's reason")
        settings = Settings.from_env({"NATS_URL": url, **auth_env})
        nc = await messaging.connect(settings.nats, within_s=10)  # provisioning, CLI, probes
        try:
            info = await nc.jetstream().account_info()
            echoed = await broker_round_trip(settings, nc)  # the service's FastStream broker
        finally:
            await nc.close()
    assert info.limits.max_streams == -1
    assert echoed == b"echo:hello"
    assert any(marker in repr(refusal) for marker in REFUSALS[case]), repr(refusal)


# --- the running service under exactly the documented permissions --------------------

SERVICE_LOGIN = {"NATS_USER": "svc", "NATS_PASSWORD": "pw-of-svc"}


def users_with(settings: Settings, service_grants: dict[str, object]) -> str:
    """The service (`service_grants`), `provision` and a client app (their documented grants)."""
    return users_config({
        "svc": ("pw-of-svc", service_grants),
        "prov": ("pw-of-prov", provision_permissions(settings).server_config()),
        "app": ("pw-of-app", client_permissions(settings).server_config()),
    })  # fmt: skip


@dataclass
class Deployment:
    """The service's environment and settings (as it reads them), before NATS is up."""

    env: dict[str, str]
    tls: TlsFiles

    @classmethod
    def of(cls, tmp_path: Path, namespace: str, database_url: str, s3: S3Settings,
           login: dict[str, str]) -> Deployment:  # fmt: skip
        tls = TlsFiles.create(tmp_path / "tls")
        env = service_environment(UNSET_URL, namespace, database_url, s3)
        return cls(env | login | {"NATS_TLS_CA": str(tls.ca)}, tls)

    @property
    def settings(self) -> Settings:
        return Settings.from_env(self.env)

    def service(self, node: NatsNode, log_path: Path, **extra: str) -> Service:
        return Service(self.env | {"NATS_URL": node.url} | extra, log_path)


#: The service's URL until its nats-server has a port (permissions do not depend on it).
UNSET_URL = "nats://127.0.0.1:4222"


@asynccontextmanager
async def client_app(
    deployment: Deployment, node: NatsNode, tls: ssl.SSLContext | None = None, **login: Any
) -> AsyncIterator[Client]:
    """A client app: plain nats-py, the events it may follow, and S3 directly."""
    settings = deployment.settings
    settings = replace(settings, nats=replace(settings.nats, servers=(node.url,)))
    nc = await nats.connect(node.url, tls=tls or trusting(deployment.tls), allow_reconnect=False,
                            max_reconnect_attempts=1, **login)  # fmt: skip
    events = EventLog(prefix=settings.nats.subject_prefix)
    for grant in client_permissions(settings).subscribe[1:]:
        await nc.subscribe(grant.subject, cb=events.on_message)
    await nc.flush()
    try:
        yield Client(settings, nc, build_object_store(settings.storage), events)
    finally:
        await nc.close()


async def provision_as(user: str, password: str, deployment: Deployment, node: NatsNode) -> str:
    """`lumiku-bgremover provision` as `user`; its output."""
    env = deployment.env | {"NATS_URL": node.url, "NATS_USER": user, "NATS_PASSWORD": password}
    done = await asyncio.to_thread(cli, "provision", env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize(
    "provision_on_start", [True, False], ids=["run-provisions", "provision-first"]
)
async def test_the_service_under_exactly_the_documented_permissions(
    provision_on_start: bool, tmp_path: Path, nats_namespace: str, migrated_database_url: str,
    s3_settings: S3Settings,
) -> None:  # fmt: skip
    login = SERVICE_LOGIN | {"PROVISION_ON_START": str(provision_on_start).lower()}
    deployment = Deployment.of(tmp_path, nats_namespace, migrated_database_url, s3_settings,
                               login)  # fmt: skip
    grants = run_permissions(deployment.settings).server_config()
    if not provision_on_start:  # the service's own part only
        assert grants == service_permissions(deployment.settings).server_config()
    config = users_with(deployment.settings, grants) + deployment.tls.server_config()
    async with nats_server(tmp_path / "nats", config) as node:
        if not provision_on_start:
            output = await provision_as("prov", "pw-of-prov", deployment, node)
            assert f"stream {nats_namespace.upper()}_WORK: created" in output
        service = deployment.service(node, tmp_path / "service.log")
        with services(service):
            await service.start()
            async with client_app(deployment, node, user="app", password="pw-of-app") as app:
                await drive_a_quote_a_batch_and_its_status(app, "secure-1")
            assert await nats_probe_answers(deployment, node), "probed as the service's user"
        server_log = node.proc.log()
    assert VIOLATION not in server_log
    assert "permissions violation" not in service.proc.log().lower()
    # 2 lanes x 8 work partitions, the dead-letter mover, 3 request and 3 app consumers
    checked = "provisioned beforehand: 23 consumers checked"
    assert (checked in service.proc.log()) is not provision_on_start


async def nats_probe_answers(deployment: Deployment, node: NatsNode) -> bool:
    """The work queue's NATS probe (only run on an outage-looking error) as user `svc`."""
    settings = deployment.settings
    settings = replace(settings, nats=replace(settings.nats, servers=(node.url,)))
    nc = await messaging.connect(settings.nats, within_s=10)
    try:
        probe = jetstream_probe(nc, StreamNames.of(settings.nats).events)
        return await probe.answers()
    finally:
        await nc.close()


async def test_a_service_that_does_not_provision_stops_on_a_missing_consumer(
    tmp_path: Path, nats_namespace: str, migrated_database_url: str, s3_settings: S3Settings
) -> None:
    login = SERVICE_LOGIN | {"PROVISION_ON_START": "false"}
    deployment = Deployment.of(tmp_path, nats_namespace, migrated_database_url, s3_settings,
                               login)  # fmt: skip
    grants = service_permissions(deployment.settings).server_config()
    config = users_with(deployment.settings, grants) + deployment.tls.server_config()
    async with nats_server(tmp_path / "nats", config) as node:
        service = deployment.service(node, tmp_path / "service.log")
        with services(service):
            service.proc.start()
            await eventually(lambda: not service.proc.alive, 60, "the service exited")
    assert service.proc.process is not None
    assert service.proc.process.returncode == 1
    work = f"{nats_namespace.upper()}_WORK"
    assert (
        f"lumiku-bgremover run: consumer {work}_INTERACTIVE_0 of stream {work} does not exist: "
        "run `lumiku-bgremover provision` first (PROVISION_ON_START is off)"
    ) in service.proc.log()


async def test_the_service_with_a_creds_file_over_mutual_tls(
    tmp_path: Path, nats_namespace: str, migrated_database_url: str, s3_settings: S3Settings
) -> None:
    operator = Operator.create()
    creds = tmp_path / "service.creds"
    creds.write_text(operator.user_creds("lumiku-bgremover"))
    deployment = Deployment.of(tmp_path, nats_namespace, migrated_database_url, s3_settings,
                               {"NATS_CREDS": str(creds)})  # fmt: skip
    tls = deployment.tls
    deployment.env |= {"NATS_TLS_CERT": str(tls.client_cert), "NATS_TLS_KEY": str(tls.client_key)}
    app_creds = tmp_path / "app.creds"
    app_creds.write_text(operator.user_creds("some-app"))
    config = operator.server_config(tmp_path) + tls.server_config(verify_clients=True)
    async with nats_server(tmp_path / "nats", config) as node:
        service = deployment.service(node, tmp_path / "service.log")
        with services(service):
            await service.start()
            client_tls = trusting(tls)
            client_tls.load_cert_chain(str(tls.client_cert), str(tls.client_key))
            async with client_app(deployment, node, client_tls,
                                  user_credentials=str(app_creds)) as app:  # fmt: skip
                await drive_a_quote_a_batch_and_its_status(app, "secure-2")


@pytest.mark.parametrize(
    ("missing", "refused"),
    [
        ("$JS.API.STREAM.INFO.{s}_REQUESTS", 'publish to "$js.api.stream.info.{s}_requests"'),
        ("$JS.API.CONSUMER.MSG.NEXT.{S}_WORK.*", 'publish to "$js.api.consumer.msg.next.{s}_work.'),
    ],
    ids=["provisioning-at-start", "pulling-work"],
)
async def test_a_missing_permission_is_logged_as_an_error_naming_it(
    missing: str, refused: str, tmp_path: Path, nats_namespace: str,
    migrated_database_url: str, s3_settings: S3Settings,
) -> None:  # fmt: skip
    deployment = Deployment.of(tmp_path, nats_namespace, migrated_database_url, s3_settings,
                               SERVICE_LOGIN)  # fmt: skip
    missing = missing.format(S=nats_namespace.upper(), s=nats_namespace.upper())
    refused = refused.format(s=nats_namespace.lower())
    grants = run_permissions(deployment.settings).server_config()
    assert missing in grants["publish"]
    grants["publish"] = [g for g in grants["publish"] if g != missing]
    config = users_with(deployment.settings, grants) + deployment.tls.server_config()
    async with nats_server(tmp_path / "nats", config) as node:
        service = deployment.service(node, tmp_path / "service.log")
        with services(service):
            service.proc.start()
            line = f"ERROR lumiku_bgremover.messaging nats: permissions violation for {refused}"
            await eventually(lambda: line in service.proc.log(), 60, f"{line!r} logged")
            if "stream.info" in refused:  # start-up cannot go on: the service exits
                await eventually(lambda: not service.proc.alive, 30, "the service exited")
                assert service.proc.process is not None
                assert service.proc.process.returncode == 1
        assert f'Publish Violation - Subject "{missing.replace(".*", ".")}' in node.proc.log()
    assert "the service's NATS user lacks this permission (see docs/nats-permissions.md)" in (
        service.proc.log())  # fmt: skip


async def drive_a_quote_a_batch_and_its_status(app: Client, request_id: str) -> None:
    await app.grant(USER, 1000)
    quote = await app.request(subjects.QUOTE, {"user_id": USER, "tier": "standard",
                                               "count": 3, "mode": "batch"})  # fmt: skip
    assert (quote["status"], quote["total"], quote["balance"]) == ("ok", 24, 1000)
    assert (quote["sufficient"], quote["accepted"]) == (True, True)
    refs = [await app.upload(USER, f"p{i}.png", photo(i)) for i in range(3)]
    await app.publish(subjects.BATCH_REQUESTED, batch_request(request_id, USER, refs))
    await app.events.wait(lambda log: bool(log.of(subjects.BATCH_COMPLETED)))
    [completed] = app.events.of(subjects.BATCH_COMPLETED)
    assert (completed["status"], completed["succeeded"], completed["failed"]) == (
        "completed", 3, 0)  # fmt: skip
    assert (completed["credits_charged"], completed["credits_refunded"]) == (24, 0)
    assert sorted(e["index"] for e in app.events.of(subjects.ITEM_DONE)) == [0, 1, 2]
    status = await app.request(subjects.BATCH_STATUS,
                               {"user_id": USER, "batch_id": completed["batch_id"]})  # fmt: skip
    assert (status["status"], status["batch_status"], status["succeeded"]) == (
        "ok", "completed", 3)  # fmt: skip
    assert await app.balance(USER) == 1000 - 24
