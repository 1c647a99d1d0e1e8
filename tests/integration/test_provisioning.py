import asyncio
import dataclasses

import pytest
from nats.aio.client import Client
from nats.js.api import RetentionPolicy, StorageType, StreamConfig

from lumiku_bgremover.provisioning import (
    Action,
    ProvisionError,
    StreamNames,
    provision_streams,
)
from lumiku_bgremover.queue import partition_of
from lumiku_bgremover.settings import Limits, NatsSettings

pytestmark = pytest.mark.integration


def nats_settings(namespace: str, **extra: object) -> NatsSettings:
    return NatsSettings(subject_prefix=f"{namespace}.", stream_prefix=namespace.upper(), **extra)  # type: ignore[arg-type]


async def test_provisioning_is_idempotent(nc: Client, nats_namespace: str) -> None:
    js = nc.jetstream()
    settings = nats_settings(nats_namespace)
    first = await provision_streams(js, settings, Limits())
    second = await provision_streams(js, settings, Limits())
    assert set(first.values()) == {Action.CREATED}
    assert len(first) == 4  # the integrations stream only when asked
    consumers = await js.consumers_info(StreamNames.of(settings).work)
    assert len(consumers) == 2 * Limits().work_partitions
    assert set(second.values()) == {Action.UNCHANGED}
    info = await js.stream_info(StreamNames.of(settings).requests)
    assert info.config.storage == StorageType.FILE
    assert info.config.duplicate_window == pytest.approx(120.0)


async def test_operator_limits_survive_and_our_fields_update(
    nc: Client, nats_namespace: str
) -> None:
    js = nc.jetstream()
    settings = nats_settings(nats_namespace)
    await provision_streams(js, settings, Limits())
    name = StreamNames.of(settings).events
    live = (await js.stream_info(name)).config
    await js.update_stream(dataclasses.replace(live, max_age=3600.0))

    changed = nats_settings(nats_namespace, duplicate_window_s=600.0)
    actions = await provision_streams(js, changed, Limits())

    assert actions[name] == Action.UPDATED
    config = (await js.stream_info(name)).config
    assert config.max_age == pytest.approx(3600.0)
    assert config.duplicate_window == pytest.approx(600.0)


async def test_a_stream_with_the_wrong_retention_is_refused(
    nc: Client, nats_namespace: str
) -> None:
    js = nc.jetstream()
    settings = nats_settings(nats_namespace)
    work = StreamNames.of(settings).work
    await js.add_stream(
        StreamConfig(
            name=work,
            subjects=[f"{nats_namespace}.elsewhere"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
        )
    )
    with pytest.raises(ProvisionError, match="retention"):
        await provision_streams(js, settings, Limits())


async def test_work_items_are_partitioned_by_user(nc: Client, nats_namespace: str) -> None:
    js = nc.jetstream()
    settings = nats_settings(nats_namespace)
    await provision_streams(js, settings, Limits(work_partitions=4))
    work = StreamNames.of(settings).work
    users = [f"user-{i}" for i in range(12)]
    for user in users + users:
        await js.publish(f"{nats_namespace}.bgremove.work.bulk.{user}", b"{}", stream=work)
    partitions: dict[str, set[int]] = {}
    for seq in range(1, 2 * len(users) + 1):
        subject = (await js.get_msg(work, seq)).subject
        *_, lane, part, user = subject.split(".")
        assert lane == "bulk"
        partitions.setdefault(user, set()).add(int(part))
        assert int(part) == partition_of(user, 4)  # our copy of the server's hash agrees
    assert all(len(p) == 1 for p in partitions.values())  # a user always lands in one partition
    assert {p for ps in partitions.values() for p in ps} <= {0, 1, 2, 3}
    assert len({p for ps in partitions.values() for p in ps}) > 1  # and users spread out


async def test_two_provisioners_at_once_agree(nc: Client, nats_namespace: str) -> None:
    js = nc.jetstream()
    settings = nats_settings(nats_namespace)
    results = await asyncio.gather(
        provision_streams(js, settings, Limits()),
        provision_streams(js, settings, Limits()),
    )
    first, second = results
    assert set(first) == set(second)
    for name in first:  # each stream was made once; the loser saw it made or made the same
        assert Action.CREATED in {first[name], second[name]}
    again = await provision_streams(js, settings, Limits())
    assert set(again.values()) == {Action.UNCHANGED}
