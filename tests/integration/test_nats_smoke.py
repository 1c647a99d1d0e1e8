"""Smoke test of the real NATS fixture: JetStream streams, de-duplication, pull consumers."""

from __future__ import annotations

import re

import pytest
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from tests.fixtures._common import unique_token
from tests.fixtures.nats import delete_namespace_streams

pytestmark = pytest.mark.integration


async def test_jetstream_deduplicates_and_pull_consumes(nc: Client, nats_namespace: str) -> None:
    js = nc.jetstream()
    stream = f"{nats_namespace.upper()}_SMOKE"
    subject = f"{nats_namespace}.smoke.requested"
    await js.add_stream(StreamConfig(name=stream, subjects=[f"{nats_namespace}.smoke.>"]))

    headers = {"Nats-Msg-Id": "req-1"}
    first = await js.publish(subject, b'{"n": 1}', headers=headers, timeout=5)
    second = await js.publish(subject, b'{"n": 1}', headers=headers, timeout=5)
    assert (first.stream, first.seq, first.duplicate) == (stream, 1, None)
    assert second.duplicate is True
    assert second.seq == first.seq
    assert (await js.stream_info(stream)).state.messages == 1

    other = await js.publish(subject, b'{"n": 2}', headers={"Nats-Msg-Id": "req-2"}, timeout=5)
    assert not other.duplicate
    assert other.seq == 2

    config = ConsumerConfig(durable_name="smoke", ack_policy=AckPolicy.EXPLICIT)
    sub = await js.pull_subscribe(subject, durable="smoke", stream=stream, config=config)
    msgs = await sub.fetch(10, timeout=2)
    assert [m.data for m in msgs] == [b'{"n": 1}', b'{"n": 2}']
    assert msgs[0].headers is not None
    assert msgs[0].headers["Nats-Msg-Id"] == "req-1"
    for msg in msgs:
        await msg.ack_sync(timeout=5)

    consumer = await js.consumer_info(stream, "smoke")
    assert (consumer.num_pending, consumer.num_ack_pending) == (0, 0)
    assert consumer.delivered.stream_seq == 2
    await sub.unsubscribe()


async def test_namespace_cleanup_deletes_only_its_own_streams(
    nc: Client, nats_namespace: str
) -> None:
    assert re.fullmatch(r"t[0-9a-f]{8}", nats_namespace)
    js = nc.jetstream()
    other = unique_token()
    mine = [f"{nats_namespace.upper()}_A", f"KV_{nats_namespace.upper()}_B"]
    theirs = f"{other.upper()}_A"
    for i, name in enumerate([*mine, theirs]):
        await js.add_stream(StreamConfig(name=name, subjects=[f"cleanup{i}.{name}"]))

    deleted = await delete_namespace_streams(nc, nats_namespace)

    assert sorted(deleted) == sorted(mine)
    names = {info.config.name for info in await js.streams_info()}
    assert theirs in names
    assert names.isdisjoint(mine)
    assert await delete_namespace_streams(nc, other) == [theirs]
