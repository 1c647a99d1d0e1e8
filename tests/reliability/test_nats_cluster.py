"""A three-node JetStream cluster with every stream at three replicas: nodes killed
one at a time under a running batch (the work stream's leader, then the node the
worker is connected to), and two workers on different nodes sharing one batch.
Nothing is lost or done twice, and the killed nodes come back current. The work
queue's NATS probe says "down" while the events stream has no leader."""

from __future__ import annotations

import dataclasses
import re
from collections import Counter

import nats
import pytest

from lumiku_bgremover.db import connect
from lumiku_bgremover.pipeline.dependencies import jetstream_probe
from lumiku_bgremover.provisioning import StreamNames, provision_streams
from tests.reliability.cluster import NatsCluster
from tests.reliability.harness import eventually, services
from tests.reliability.stack import (
    Stack,
    assert_all_done,
    client_of,
    item_states,
    submit_batch,
    wait_batches_completed,
    wait_done_at_least,
)

COUNT = 30
#: The client connection that fetches, acks and publishes item events.
PIPELINE = "lumiku-bgremover-pipeline"
#: One item at a time, 0.5 s each: the batch outlasts both faults (about 15 s of work).
PACED = {"FAKE_ENGINE_DELAY_S": "0.5", "WORKER_CONCURRENCY": "1", "WORK_ACK_WAIT_S": "5"}
DONE_LINE = re.compile(r"item (\S+) done")


def cluster_of(stack: Stack) -> NatsCluster:
    assert isinstance(stack.nats, NatsCluster)
    return stack.nats


def stream_names(stack: Stack) -> list[str]:
    return list(dataclasses.astuple(StreamNames.of(stack.settings.nats)))


async def done_count(stack: Stack) -> int:
    return (await item_states(stack.database_url))["done"]


async def progressed(stack: Stack, by: int = 2) -> None:
    """Until `by` more items are done than now: the batch moves on without the node."""
    await wait_done_at_least(stack.database_url, await done_count(stack) + by)


@pytest.mark.long  # 30-40 s on a loaded machine: `make test-reliability` only
@pytest.mark.timeout(300)
async def test_leader_then_connected_node_killed_loses_and_doubles_nothing(
    cluster_stack: Stack,
) -> None:
    cluster = cluster_of(cluster_stack)
    work = StreamNames.of(cluster_stack.settings.nats).work
    service = await cluster_stack.service("worker", **PACED).start()
    with services(service):
        async with client_of(cluster_stack) as client:
            await cluster.wait_all_current(stream_names(cluster_stack))  # provisioned at R3
            await submit_batch(client, "ann", COUNT, "cluster-kills")
            await wait_done_at_least(cluster_stack.database_url, 3)
            leader = await cluster.leader_of(work)
            cluster.nodes[leader].kill()
            await cluster.leader_of(work, other_than=leader)
            await progressed(cluster_stack)
            await cluster.restart(leader)
            await cluster.wait_all_current(stream_names(cluster_stack))
            [connected] = await cluster.connected_to(PIPELINE)
            assert await done_count(cluster_stack) < COUNT, "the second fault hits a live batch"
            cluster.nodes[connected].kill()
            await progressed(cluster_stack)
            await cluster.restart(connected)
            await wait_batches_completed(cluster_stack.database_url, 1, 180)
            await assert_all_done(cluster_stack, client, "ann", COUNT)
        await cluster.wait_all_current(stream_names(cluster_stack))
        await eventually(
            lambda: "NATS connection re-established" in service.proc.log(), 30, "reconnected"
        )


def done_items(log: str) -> list[str]:
    return DONE_LINE.findall(log)


@pytest.mark.timeout(240)
async def test_two_workers_on_different_nodes_share_a_batch(cluster_stack: Stack) -> None:
    cluster = cluster_of(cluster_stack)
    first, second = (
        cluster_stack.service(f"worker-{name}", NATS_URL=cluster.nodes[name].url)
        for name in ("n0", "n1")
    )
    with services(first, second):
        await first.start()
        await second.start()
        assert sorted(await cluster.connected_to(PIPELINE)) == ["n0", "n1"]
        async with client_of(cluster_stack) as client:
            await submit_batch(client, "ann", COUNT, "cluster-shared")
            await wait_batches_completed(cluster_stack.database_url, 1, 120)
            await assert_all_done(cluster_stack, client, "ann", COUNT)
        async with connect(cluster_stack.database_url) as conn:
            ids = [str(r["id"]) for r in await conn.fetch("SELECT id FROM batch_items")]
    by_first, by_second = done_items(first.proc.log()), done_items(second.proc.log())
    assert by_first, "the worker on n0 finished items"
    assert by_second, "the worker on n1 finished items"
    assert Counter(by_first + by_second) == Counter(ids), "each item finished by one worker, once"


@pytest.mark.timeout(180)
async def test_the_nats_probe_is_down_while_the_events_stream_has_no_leader(
    cluster_stack: Stack,
) -> None:
    cluster = cluster_of(cluster_stack)
    settings = cluster_stack.settings
    events = StreamNames.of(settings.nats).events
    async with cluster.client() as nc:
        await provision_streams(nc.jetstream(), settings.nats, settings.limits)
    await cluster.wait_all_current([events])
    leader = await cluster.leader_of(events)
    survivor, *others = [name for name in cluster.nodes if name != leader]
    nc = await nats.connect(cluster.nodes[survivor].url, max_reconnect_attempts=-1)
    try:
        probe = jetstream_probe(nc, events)
        assert await probe.answers()
        for name in (leader, *others):
            cluster.nodes[name].kill()  # one of three left: no quorum, no leader
        await nc.flush(timeout=5)  # the connection itself is fine ...
        assert not await probe.answers()  # ... but the stream cannot take a publish
        await cluster.restart(leader)
        await eventually(probe.answers, 60, "the probe answers once the stream has a leader")
    finally:
        await nc.close()
