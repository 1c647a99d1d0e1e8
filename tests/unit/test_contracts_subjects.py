"""Subjects, prefixes, work-queue subjects and the registry."""

from __future__ import annotations

import pytest

from lumiku_bgremover.contracts import subjects
from lumiku_bgremover.contracts.subjects import REGISTRY, Direction, contract_for
from lumiku_bgremover.contracts.work import Lane

#: The subject table of DESIGN.md ("Messaging"), with the work subject as its template.
DESIGN_TABLE = {
    "bgremove.batch.requested": "in",
    "bgremove.image.requested": "in",
    "bgremove.batch.cancel": "in",
    "avatar.project.completed": "in",
    "pose.generated": "in",
    "upscaler.completed": "in",
    "bgremove.quote": "request-reply",
    "bgremove.batch.status": "request-reply",
    "bgremove.settings.get": "request-reply",
    "bgremove.settings.set": "request-reply",
    "bgremove.work.{lane}.{user_id}": "internal",
    "bgremove.batch.accepted": "out",
    "bgremove.request.rejected": "out",
    "bgremove.item.done": "out",
    "bgremove.item.failed": "out",
    "bgremove.batch.progress": "out",
    "bgremove.batch.completed": "out",
    "upscaler.requested": "out",
}


#: Operator subjects (issue "Billing"), off unless ADMIN_SUBJECTS_ENABLED; not in DESIGN.md.
ADMIN_TABLE = {
    "bgremove.admin.credits.grant": "request-reply",
    "bgremove.admin.credits.balance": "request-reply",
    "bgremove.admin.subscription.set": "request-reply",
    "bgremove.admin.subscription.show": "request-reply",
}


def test_registry_matches_the_design_table() -> None:
    assert {c.subject: c.direction.value for c in REGISTRY} == DESIGN_TABLE | ADMIN_TABLE
    assert len(REGISTRY) == len(DESIGN_TABLE) + len(ADMIN_TABLE)
    assert set(subjects.ADMIN_SUBJECTS) == set(ADMIN_TABLE)


def test_subject_groups_agree_with_the_registry() -> None:
    by_direction: dict[Direction, set[str]] = {}
    for contract in REGISTRY:
        by_direction.setdefault(contract.direction, set()).add(contract.subject)
    assert (
        set(subjects.REQUEST_SUBJECTS) | set(subjects.INTEGRATION_SUBJECTS)
        == (by_direction[Direction.IN])
    )
    assert set(subjects.EVENT_SUBJECTS) == by_direction[Direction.OUT]
    assert set(subjects.REQUEST_REPLY_SUBJECTS) == by_direction[Direction.REQUEST_REPLY]
    assert by_direction[Direction.INTERNAL] == {subjects.WORK_ADDRESS}


def test_every_contract_has_messages_and_replies_only_on_request_reply() -> None:
    for contract in REGISTRY:
        assert contract.messages, contract.subject
        assert contract.summary, contract.subject
        assert bool(contract.replies) is (contract.direction is Direction.REQUEST_REPLY)
        assert contract.jetstream is (contract.direction is not Direction.REQUEST_REPLY)


def test_channel_ids_are_unique_camel_case() -> None:
    ids = [c.channel_id for c in REGISTRY]
    assert len(set(ids)) == len(ids)
    assert contract_for(subjects.BATCH_REQUESTED).channel_id == "bgremoveBatchRequested"
    assert contract_for(subjects.WORK_ADDRESS).channel_id == "bgremoveWork"
    with pytest.raises(KeyError):
        contract_for("bgremove.nothing")


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("", "bgremove.item.done"),
        ("t123.", "t123.bgremove.item.done"),
        ("a.b-c.", "a.b-c.bgremove.item.done"),
    ],
)
def test_with_prefix(prefix: str, expected: str) -> None:
    assert subjects.with_prefix(prefix, subjects.ITEM_DONE) == expected


@pytest.mark.parametrize("prefix", ["t123", ".t.", "t..", "t*.", "t>.", "t 1."])
def test_with_prefix_refuses_bad_prefixes(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        subjects.with_prefix(prefix, subjects.ITEM_DONE)


def test_work_subjects() -> None:
    assert subjects.work_subject(Lane.BULK, "usr_1") == "bgremove.work.bulk.usr_1"
    assert subjects.work_subject(Lane.INTERACTIVE, "u-2", "t9.") == (
        "t9.bgremove.work.interactive.u-2"
    )
    assert subjects.work_filter(Lane.BULK, 3, "t9.") == "t9.bgremove.work.bulk.3.*"
    assert subjects.parse_work_subject("t9.bgremove.work.bulk.3.usr_1", "t9.") == (
        Lane.BULK,
        3,
        "usr_1",
    )


@pytest.mark.parametrize("user_id", ["a.b", "a*", "a>", "", "-a", "x" * 65])
def test_work_subject_refuses_unsafe_user_ids(user_id: str) -> None:
    with pytest.raises(ValueError, match="user id"):
        subjects.work_subject(Lane.BULK, user_id)


@pytest.mark.parametrize(
    "subject",
    [
        "bgremove.work.bulk.usr_1",  # not yet transformed: no partition
        "bgremove.work.fast.1.usr_1",
        "bgremove.work.bulk.x.usr_1",
        "other.work.bulk.1.usr_1",
        "t9.bgremove.work.bulk.1.usr_1",  # prefix not expected
    ],
)
def test_parse_work_subject_refuses_other_subjects(subject: str) -> None:
    with pytest.raises(ValueError, match="work subject"):
        subjects.parse_work_subject(subject)


def test_work_filter_refuses_negative_partitions() -> None:
    with pytest.raises(ValueError, match="partition"):
        subjects.work_filter(Lane.BULK, -1)
