import pytest
from nats.js.api import RetentionPolicy, StorageType, StreamConfig

from lumiku_bgremover.provisioning import (
    ProvisionError,
    StreamNames,
    merge,
    stream_configs,
    work_consumer_configs,
)
from lumiku_bgremover.settings import Limits, NatsSettings


def configs(*, with_integrations: bool = True, **nats: object) -> dict[str, StreamConfig]:
    settings = NatsSettings(**nats)  # type: ignore[arg-type]
    found = stream_configs(settings, Limits(work_partitions=4), with_integrations=with_integrations)
    return {c.name or "": c for c in found}


def test_the_integrations_stream_is_made_only_when_asked() -> None:
    assert "T1_INTEGRATIONS" not in configs(with_integrations=False, stream_prefix="T1")
    assert "T1_INTEGRATIONS" in configs(stream_prefix="T1")


def test_every_stream_is_file_backed_with_the_duplicate_window() -> None:
    for config in configs(duplicate_window_s=300.0, stream_replicas=3).values():
        assert config.storage == StorageType.FILE
        assert config.duplicate_window == 300.0
        assert config.num_replicas == 3


def test_names_and_subjects_carry_the_prefixes() -> None:
    by_name = configs(stream_prefix="T1", subject_prefix="t1.")
    assert set(by_name) == {
        "T1_REQUESTS",
        "T1_INTEGRATIONS",
        "T1_WORK",
        "T1_EVENTS",
        "T1_DEADLETTERS",
    }
    assert "t1.bgremove.batch.requested" in (by_name["T1_REQUESTS"].subjects or [])
    assert "t1.avatar.project.completed" in (by_name["T1_INTEGRATIONS"].subjects or [])
    assert "t1.bgremove.batch.completed" in (by_name["T1_EVENTS"].subjects or [])
    for name, config in by_name.items():
        if name != "T1_DEADLETTERS":
            assert all((s or "").startswith("t1.") for s in config.subjects or [])
    assert by_name["T1_DEADLETTERS"].subjects == [
        "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.T1_WORK.*"
    ]


def test_one_work_consumer_per_lane_and_partition() -> None:
    settings = NatsSettings(stream_prefix="T1", subject_prefix="t1.")
    consumers = work_consumer_configs(settings, Limits(work_partitions=3, max_deliver=7))
    assert [c.durable_name for c in consumers] == [
        "T1_WORK_INTERACTIVE_0",
        "T1_WORK_INTERACTIVE_1",
        "T1_WORK_INTERACTIVE_2",
        "T1_WORK_BULK_0",
        "T1_WORK_BULK_1",
        "T1_WORK_BULK_2",
    ]
    assert consumers[4].filter_subject == "t1.bgremove.work.bulk.1.*"
    assert {c.max_deliver for c in consumers} == {7}
    assert {c.backoff for c in consumers} == {None}  # NAK delays only (NATS-NOTES trap 6)


def test_work_stream_is_a_partitioned_work_queue() -> None:
    work = configs(stream_prefix="X")["X_WORK"]
    assert work.retention == RetentionPolicy.WORK_QUEUE
    assert work.subjects == ["bgremove.work.*.*"]
    assert work.subject_transform is not None
    assert work.subject_transform.src == "bgremove.work.*.*"
    assert work.subject_transform.dest == (
        "bgremove.work.{{wildcard(1)}}.{{partition(4,2)}}.{{wildcard(2)}}"
    )


def test_names_of() -> None:
    names = StreamNames.of(NatsSettings(stream_prefix="ABC"))
    assert (names.requests, names.work, names.events) == ("ABC_REQUESTS", "ABC_WORK", "ABC_EVENTS")


def test_merge_keeps_operator_limits_and_applies_ours() -> None:
    wanted = configs()["BGREMOVE_EVENTS"]
    live = StreamConfig(
        name=wanted.name,
        subjects=["old.subject"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=42.0,
        max_bytes=1_000_000,
        duplicate_window=60.0,
    )
    merged = merge(live, wanted)
    assert merged.subjects == wanted.subjects
    assert merged.duplicate_window == wanted.duplicate_window
    assert (merged.max_age, merged.max_bytes) == (42.0, 1_000_000)


def test_merge_refuses_a_retention_change() -> None:
    wanted = configs()["BGREMOVE_WORK"]
    live = StreamConfig(
        name=wanted.name, retention=RetentionPolicy.LIMITS, storage=StorageType.FILE
    )
    with pytest.raises(ProvisionError, match="retention"):
        merge(live, wanted)
