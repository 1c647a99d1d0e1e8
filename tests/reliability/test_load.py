"""Load: 20 users submit 5 batches of 5 images each at once, while quotes are asked for.

Every batch completes, each item once; quotes keep answering (no timeout); each user's
balance is exactly grants - charges + refunds. Fairness is what the service promises
(README, "How a batch flows"; `queue/scheduling.py`): items are partitioned by a hash
of the user, and a worker takes from the partitions in turn, so while every partition
has items waiting each one gets the same share of the work, whoever's batches came
first. Users who share a partition share its turns in the order their items arrived.

To see the turns in the order items finish, deliveries are paused (the operators'
`queue pause`) while the 100 requests are taken in, so that every partition is backlogged
when work starts; then resumed. Intake, and the quotes, run at full load regardless.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

import msgspec
import nats.errors
import pytest

from lumiku_bgremover.contracts import subjects
from lumiku_bgremover.contracts.work import Lane
from lumiku_bgremover.db import connect
from lumiku_bgremover.operations.queue import pause, resume
from lumiku_bgremover.queue.scheduling import partition_of
from tests.fixtures.events import stored_events
from tests.integration.pipeline_harness import Client, batch_request, photo
from tests.reliability.harness import eventually
from tests.reliability.stack import Stack, client_of, standard_price, wait_batches_completed

pytestmark = [pytest.mark.long, pytest.mark.timeout(600)]

USERS = [f"u{i:02d}" for i in range(20)]  #: 2 or 3 users in each of the 8 partitions
BATCHES, IMAGES, GRANT = 5, 5, 1000
PARTITIONS = 8
#: How far apart two partitions' shares of the finished items may drift while every
#: partition has work: two slots finish out of order, a prefetch may be a turn late.
SLACK = 3


@dataclass
class Quotes:
    answered: int = 0
    timeouts: int = 0
    errors: int = 0


@contextlib.asynccontextmanager
async def quoting(client: Client, stack: Stack) -> AsyncIterator[Quotes]:
    """Ask for a quote every 0.1 s (as a front end would) until the block ends."""
    seen = Quotes()
    subject = subjects.with_prefix(stack.settings.nats.subject_prefix, subjects.QUOTE)

    async def ask() -> None:
        for n in range(10**9):
            body = {"user_id": USERS[n % len(USERS)], "tier": "standard", "count": IMAGES}
            try:
                reply = await client.nc.request(subject, msgspec.json.encode(body), timeout=2)
            except nats.errors.TimeoutError:
                seen.timeouts += 1
                continue
            ok = msgspec.json.decode(reply.data).get("status") == "ok"
            seen.answered += ok
            seen.errors += not ok
            await asyncio.sleep(0.1)  # pacing, not waiting for a state

    task = asyncio.create_task(ask())
    try:
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def submit_all(client: Client) -> None:
    """Every user's grant and photos, then all 100 requests published at once."""
    refs = {}
    for user in USERS:
        await client.grant(user, GRANT)
        refs[user] = [await client.upload(user, f"p{i}.png", photo(i)) for i in range(IMAGES)]
    requests = [
        batch_request(f"{user}-b{b}", user, refs[user]) for b in range(BATCHES) for user in USERS
    ]
    await asyncio.gather(*(client.publish(subjects.BATCH_REQUESTED, r) for r in requests))


async def wait_accepted(stack: Stack, count: int) -> None:
    async def check() -> bool:
        async with connect(stack.database_url) as conn:
            return int(await conn.fetchval("SELECT count(*) FROM batches")) >= count

    await eventually(check, 120, f"{count} batches accepted")


def turns_drift(done_users: list[str]) -> tuple[int, int, int]:
    """The largest drift between partitions' shares while all had work: (drift, from, to).

    From the first finished item by which every partition had begun (startup is
    not a turn) to the last one before any partition ran out.
    """
    order = [partition_of(user, PARTITIONS) for user in done_users]
    first = max(order.index(p) for p in range(PARTITIONS))
    last_of = {p: len(order) - 1 - order[::-1].index(p) for p in range(PARTITIONS)}
    end = min(last_of.values())
    base = Counter(order[: first + 1])
    drift = 0
    for k in range(first + 1, end + 1):
        share = Counter(order[: k + 1])
        gained = [share[p] - base[p] for p in range(PARTITIONS)]
        drift = max(drift, max(gained) - min(gained))
    return drift, first, end


async def test_twenty_users_five_batches_each_at_once(stack: Stack) -> None:
    total = len(USERS) * BATCHES
    env = {"FAKE_ENGINE_DELAY_S": "0.02", "WORKER_CONCURRENCY": "2"}
    service = await stack.service("worker", **env).start()
    try:
        async with client_of(stack) as client, quoting(client, stack) as quotes:
            js, settings = client.nc.jetstream(), stack.settings
            await pause(js, settings.nats, settings.limits, [Lane.INTERACTIVE])
            await submit_all(client)
            await wait_accepted(stack, total)
            await resume(js, settings.nats, settings.limits, [Lane.INTERACTIVE])
            await wait_batches_completed(stack.database_url, total, 400)
            await assert_users_settled(stack, client)
        assert (quotes.timeouts, quotes.errors) == (0, 0)
        assert quotes.answered > 0
        print(f"quotes answered during the load: {quotes.answered}")  # noqa: T201
    finally:
        service.proc.kill()
    done = await stored_events(stack.settings, subjects.ITEM_DONE)
    drift, first, end = turns_drift([e["user_id"] for e in done])
    print(f"partition turns: drift {drift} over finished items {first}..{end}")  # noqa: T201
    assert end - first >= 300, "the partitions were all busy for most of the run"
    assert drift <= SLACK
    assert_no_user_last(await stored_events(stack.settings, subjects.BATCH_COMPLETED))


async def assert_users_settled(stack: Stack, client: Client) -> None:
    """Each item once, every batch completed, each user's ledger exact."""
    done = await stored_events(stack.settings, subjects.ITEM_DONE)
    assert len(done) == len({e["item_id"] for e in done}) == len(USERS) * BATCHES * IMAGES
    assert await stored_events(stack.settings, subjects.ITEM_FAILED) == []
    completed = await stored_events(stack.settings, subjects.BATCH_COMPLETED)
    assert Counter((c["user_id"], c["status"], c["succeeded"]) for c in completed) == {
        (user, "completed", IMAGES): BATCHES for user in USERS
    }
    charge = standard_price(IMAGES)
    for user in USERS:
        mine = [c for c in completed if c["user_id"] == user]
        charged = sum(c["credits_charged"] for c in mine)
        refunded = sum(c["credits_refunded"] for c in mine)
        assert (charged, refunded) == (BATCHES * charge, 0)
        ledger = await client.ledger(user)
        assert await client.balance(user) == sum(e.amount for e in ledger)
        assert await client.balance(user) == GRANT - charged + refunded, user


def assert_no_user_last(completed: list[dict[str, object]]) -> None:
    """No user's batches all finished after every other user's batches."""
    order = [str(c["user_id"]) for c in completed]
    for user in USERS:
        first_own = order.index(user)
        others_last = max(i for i, other in enumerate(order) if other != user)
        assert first_own < others_last, f"all of {user}'s batches finished last"
