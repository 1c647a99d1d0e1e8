"""What a graceful stop (SIGTERM) costs the work queue, in deliveries.

On stop the runner lets the item in flight finish (acked), and NAKs the messages its
feeds fetched ahead (one per partition with work) and any item waiting out an outage.
JetStream cannot take a delivery back: a NAKed message is delivered again with its
delivery count one higher. So each held message spends one of its `WORK_MAX_DELIVER`
deliveries; an item held on its last delivery is then failed as `max_deliveries`
(refunded) by the dead-letter mover. This test pins that down exactly.
"""

from __future__ import annotations

import pytest
from nats.js.api import ConsumerInfo

from lumiku_bgremover.contracts import subjects
from lumiku_bgremover.contracts.work import Lane
from lumiku_bgremover.provisioning import StreamNames
from lumiku_bgremover.queue.scheduling import partition_of
from tests.integration.pipeline_harness import Client, batch_request, photo
from tests.reliability.harness import eventually
from tests.reliability.stack import Stack, client_of, item_states

pytestmark = pytest.mark.timeout(300)

PARTITIONS = 8
#: Three users in three partitions, three images each.
USERS = ("u00", "u02", "u04")
IMAGES = 3


def consumer_of(stack: Stack, user: str) -> str:
    names = StreamNames.of(stack.settings.nats)
    return names.work_consumer(Lane.INTERACTIVE, partition_of(user, PARTITIONS))


async def infos(client: Client, stack: Stack) -> list[ConsumerInfo]:
    js, stream = client.nc.jetstream(), StreamNames.of(stack.settings.nats).work
    return [await js.consumer_info(stream, consumer_of(stack, u)) for u in USERS]


async def deliveries_left_in_queue(client: Client, stack: Stack, user: str) -> list[int]:
    """The delivery counts of the user's messages still queued (fetched, then NAKed back)."""
    js = client.nc.jetstream()
    stream = StreamNames.of(stack.settings.nats).work
    sub = await js.pull_subscribe_bind(durable=consumer_of(stack, user), stream=stream)
    info = await sub.consumer_info()
    pending = info.num_pending + info.num_ack_pending  # a NAKed message stays ack-pending
    messages = await sub.fetch(pending, timeout=10) if pending else []
    for message in messages:
        await message.nak()
    await sub.unsubscribe()
    return [m.metadata.num_delivered for m in messages]


async def test_a_graceful_stop_spends_one_delivery_per_message_held(stack: Stack) -> None:
    assert len({partition_of(u, PARTITIONS) for u in USERS}) == len(USERS)
    env = {"FAKE_ENGINE_DELAY_S": "2", "WORKER_CONCURRENCY": "1"}
    service = await stack.service("worker", **env).start()
    try:
        async with client_of(stack) as client:
            for user in USERS:
                await client.grant(user, 1000)
                refs = [await client.upload(user, f"p{i}.png", photo(i)) for i in range(IMAGES)]
                await client.publish(subjects.BATCH_REQUESTED, batch_request(user, user, refs))

            async def one_running_three_held() -> bool:
                held = sum(i.num_ack_pending for i in await infos(client, stack))
                return held == 1 + len(USERS)

            await eventually(one_running_three_held, 60, "one item running, one held per feed")
            assert service.proc.stop(timeout_s=60) == 0
            states = await item_states(stack.database_url)
            left = {u: await deliveries_left_in_queue(client, stack, u) for u in USERS}
    finally:
        service.proc.kill()
    # what was running finished and was acked: nothing is left half-done
    assert set(states) <= {"done", "pending"}
    assert sum(len(counts) for counts in left.values()) == states["pending"]
    # each feed's message fetched ahead came back with one delivery more; the rest untouched
    assert {u: counts[0] for u, counts in left.items()} == dict.fromkeys(USERS, 2)
    assert [n for counts in left.values() for n in counts[1:]] == [1] * (states["pending"] - 3)
