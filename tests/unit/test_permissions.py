"""The NATS permissions rendered from the code: prefixes, options, and the log of a refusal."""

import logging

import pytest

from lumiku_bgremover import messaging
from lumiku_bgremover.permissions import (
    INBOX,
    Grant,
    Permissions,
    client_permissions,
    provision_permissions,
    run_permissions,
    service_permissions,
)
from lumiku_bgremover.settings import Settings

STAGING = {"NATS_SUBJECT_PREFIX": "staging.", "NATS_STREAM_PREFIX": "LUMIKU"}


def every_subject(permissions: Permissions) -> list[str]:
    return [g.subject for g in (*permissions.publish, *permissions.subscribe)]


def test_every_subject_is_under_the_deployment_prefixes() -> None:
    settings = Settings.from_env(STAGING)
    for permissions in (run_permissions(settings), client_permissions(settings)):
        for subject in every_subject(permissions):
            if subject.startswith("$JS."):
                assert ".LUMIKU_" in subject, subject
            else:
                assert subject == INBOX or subject.startswith("staging."), subject


def test_the_run_user_is_the_service_and_provisioning_together() -> None:
    settings = Settings.from_env({})
    service, provision = service_permissions(settings), provision_permissions(settings)
    run = run_permissions(settings)
    assert set(every_subject(run)) == set(every_subject(service)) | set(every_subject(provision))
    assert len(every_subject(run)) == len(set(every_subject(run))), "each subject once"
    assert run.server_config()["allow_responses"] is True
    assert "allow_responses" not in provision.server_config()


def test_admin_subjects_are_subscribed_only_when_enabled() -> None:
    off = service_permissions(Settings.from_env({}))
    on = service_permissions(Settings.from_env({"ADMIN_SUBJECTS_ENABLED": "true"}))
    admin = [s for s in every_subject(on) if ".admin." in s]
    assert admin == [
        "bgremove.admin.credits.grant", "bgremove.admin.credits.balance",
        "bgremove.admin.subscription.set", "bgremove.admin.subscription.show",
    ]  # fmt: skip
    assert [s for s in every_subject(off) if ".admin." in s] == []


def test_an_apps_own_stream_is_consumed_and_looked_up_but_never_created() -> None:
    env = {"INTEGRATION_APPS": "avatar-creator", "AVATAR_CREATOR_STREAM": "AVATARS",
           "AVATAR_CREATOR_DURABLE": "BGREMOVE_AVATARS"}  # fmt: skip
    settings = Settings.from_env(env)
    service = every_subject(service_permissions(settings))
    assert "$JS.API.CONSUMER.MSG.NEXT.AVATARS.BGREMOVE_AVATARS" in service
    assert "$JS.ACK.AVATARS.BGREMOVE_AVATARS.>" in service
    assert not [s for s in service if "POSE" in s or "UPSCALER" in s]
    provision = every_subject(provision_permissions(settings))
    assert "$JS.API.STREAM.INFO.AVATARS" in provision
    assert "$JS.API.CONSUMER.DURABLE.CREATE.AVATARS.BGREMOVE_AVATARS" in provision
    assert [s for s in provision if "STREAM.CREATE.AVATARS" in s or "UPDATE.AVATARS" in s] == []


def test_a_union_keeps_the_first_reason_of_a_subject() -> None:
    a = Permissions((Grant("x", "first"),), (Grant(INBOX, "replies"),))
    b = Permissions((Grant("x", "second"), Grant("y", "why")), (), allow_responses=True)
    assert a | b == Permissions((Grant("x", "first"), Grant("y", "why")),
                                (Grant(INBOX, "replies"),), allow_responses=True)  # fmt: skip


async def test_a_refused_permission_is_logged_as_an_error(caplog: pytest.LogCaptureFixture) -> None:
    refusal = Exception('nats: permissions violation for publish to "bgremove.item.done"')
    with caplog.at_level(logging.WARNING, logger=messaging.__name__):
        await messaging.logging_callbacks()["error_cb"](refusal)
        await messaging.logging_callbacks()["error_cb"](ConnectionRefusedError("down"))
    lacking = "the service's NATS user lacks this permission (see docs/nats-permissions.md)"
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("ERROR", f'nats: permissions violation for publish to "bgremove.item.done": {lacking}'),
        ("WARNING", "NATS: ConnectionRefusedError('down')"),
    ]


def test_a_service_that_does_not_provision_needs_only_its_own_permissions() -> None:
    settings = Settings.from_env({"PROVISION_ON_START": "false"})
    assert settings.provision_on_start is False
    assert run_permissions(settings) == service_permissions(settings)
    assert not [s for s in every_subject(run_permissions(settings)) if ".CREATE." in s]
    assert not [s for s in every_subject(run_permissions(settings)) if ".UPDATE." in s]
