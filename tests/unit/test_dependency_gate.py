"""The dependency gate and the work queue's handling of outages, with fakes."""

import asyncio
from types import SimpleNamespace

import asyncpg
import nats.errors
import pytest
import urllib3.exceptions

from lumiku_bgremover.contracts.codes import FailCode
from lumiku_bgremover.pipeline.dependencies import is_outage
from lumiku_bgremover.pipeline.processor import ItemFailedError
from lumiku_bgremover.queue import Delivery, WorkQueueRunner
from lumiku_bgremover.queue.gate import AlwaysUp, DependencyGate, Probe
from lumiku_bgremover.settings import Limits, NatsSettings


@pytest.mark.parametrize(
    ("error", "outage"),
    [
        (asyncpg.ConnectionDoesNotExistError("gone"), True),
        (asyncpg.CannotConnectNowError("starting"), True),
        (asyncpg.InterfaceError("connection is closed"), True),
        (ConnectionRefusedError(111, "refused"), True),
        (TimeoutError(), True),
        (urllib3.exceptions.MaxRetryError(None, "/", None), True),  # type: ignore[arg-type]
        (nats.errors.TimeoutError(), True),
        (ValueError("bad"), False),
        (asyncpg.UniqueViolationError("dup"), False),
        (ItemFailedError(FailCode.MAX_DELIVERIES, "engine"), False),
    ],
)
def test_outage_candidates(error: BaseException, outage: bool) -> None:
    assert is_outage(error) is outage


class Switch:
    """A dependency the test turns on and off."""

    def __init__(self) -> None:
        self.up = True
        self.checks = 0

    async def check(self) -> None:
        self.checks += 1
        if not self.up:
            raise ConnectionRefusedError(111, "refused")


async def test_an_ordinary_error_does_not_probe_or_close() -> None:
    db = Switch()
    gate = DependencyGate([Probe("db", db.check)], is_outage, interval_s=0.01)
    assert not await gate.down(ValueError("bad image"))
    assert db.checks == 0
    assert gate.is_open


async def test_an_outage_candidate_with_every_probe_answering_is_an_item_failure() -> None:
    gate = DependencyGate([Probe("db", Switch().check)], is_outage, interval_s=0.01)
    assert not await gate.down(ConnectionResetError())
    assert gate.is_open


async def test_a_confirmed_outage_closes_the_gate_until_the_probe_answers() -> None:
    db = Switch()
    db.up = False
    gate = DependencyGate([Probe("db", db.check)], is_outage, interval_s=0.01)
    assert await gate.down(ConnectionResetError())
    assert not gate.is_open
    assert await gate.down(ConnectionResetError())  # already closed: no second watcher
    waiting = asyncio.ensure_future(gate.wait_up())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    db.up = True
    await asyncio.wait_for(waiting, 1)
    assert gate.is_open
    await gate.close()


async def test_a_hung_probe_counts_as_down_and_is_not_started_twice() -> None:
    started = 0
    release = asyncio.Event()

    async def hung() -> None:
        nonlocal started
        started += 1
        await release.wait()

    probe = Probe("s3", hung)
    assert not await probe.answers(timeout_s=0.01)
    assert not await probe.answers(timeout_s=0.01)
    assert started == 1
    release.set()
    assert await probe.answers(timeout_s=1)


class FakeMessage:
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def ack(self) -> None:
        self.calls.append("ack")

    async def nak(self, delay: float | None = None) -> None:
        self.calls.append(f"nak {delay}")

    async def in_progress(self) -> None:
        self.calls.append("in_progress")


class OnceDown:
    """A gate that confirms the first outage and opens when told to."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.is_open = True

    async def down(self, error: BaseException) -> bool:
        if not is_outage(error):
            return False
        self.is_open = False
        return True

    def candidate(self, error: BaseException) -> bool:
        return is_outage(error)

    async def wait_up(self) -> None:
        await self.opened.wait()
        self.is_open = True


class Blips(OnceDown):
    """Outage candidates whose probes all answer: the gate never closes."""

    async def down(self, error: BaseException) -> bool:
        return False


class FlakyProcessor:
    def __init__(self, errors: list[Exception]) -> None:
        self.errors, self.calls, self.given_up = errors, 0, 0

    async def process(self, delivery: Delivery) -> None:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)

    async def give_up(self, item: object, *, code: FailCode, message: str) -> None:
        self.given_up += 1


def runner_with(processor: FlakyProcessor, gate: OnceDown | AlwaysUp) -> WorkQueueRunner:
    return WorkQueueRunner(
        None,  # type: ignore[arg-type]
        NatsSettings(), Limits(), processor, heartbeat_s=0.01, gate=gate,
    )  # fmt: skip


def last_delivery() -> Delivery:
    item = SimpleNamespace(item_id="i1")
    return Delivery(item=item, attempt=5, last=True, stream_seq=1)  # type: ignore[arg-type]


async def test_an_outage_on_the_last_delivery_waits_and_retries_without_giving_up() -> None:
    processor, gate = FlakyProcessor([ConnectionResetError("db gone")]), OnceDown()
    message = FakeMessage()
    settling = asyncio.ensure_future(
        runner_with(processor, gate)._settle(message, last_delivery())  # type: ignore[arg-type]
    )
    await asyncio.sleep(0.05)
    assert not settling.done()
    assert "in_progress" in message.calls  # heartbeated while waiting
    gate.opened.set()
    await asyncio.wait_for(settling, 1)
    assert (processor.calls, processor.given_up) == (2, 0)
    assert message.calls[-1] == "ack"
    assert not any(call.startswith("nak") for call in message.calls)


async def test_an_item_failure_on_the_last_delivery_is_given_up() -> None:
    processor, gate = FlakyProcessor([RuntimeError("broken image")]), OnceDown()
    message = FakeMessage()
    await runner_with(processor, gate)._settle(message, last_delivery())  # type: ignore[arg-type]
    assert (processor.calls, processor.given_up) == (1, 1)
    assert message.calls[-1] == "ack"


async def test_stopping_gives_a_waiting_item_back_at_once() -> None:
    processor, gate = FlakyProcessor([ConnectionResetError("db gone")]), OnceDown()
    message = FakeMessage()
    runner = runner_with(processor, gate)
    settling = asyncio.ensure_future(runner._settle(message, last_delivery()))  # type: ignore[arg-type]
    await asyncio.sleep(0.02)
    await runner.stop()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(settling, 1)
    assert message.calls[-1] == "nak None"
    assert processor.given_up == 0


async def test_a_blip_runs_the_item_again_at_once_on_the_same_delivery() -> None:
    processor = FlakyProcessor([TimeoutError("nats: timeout")])  # a stream electing a leader
    message = FakeMessage()
    await runner_with(processor, Blips())._settle(message, first_delivery())  # type: ignore[arg-type]
    assert (processor.calls, processor.given_up) == (2, 0)
    assert message.calls[-1] == "ack"
    assert not any(call.startswith("nak") for call in message.calls)


async def test_a_second_blip_counts_against_the_item() -> None:
    processor = FlakyProcessor([ConnectionResetError("reset"), ConnectionResetError("reset")])
    message = FakeMessage()
    await runner_with(processor, Blips())._settle(message, first_delivery())  # type: ignore[arg-type]
    assert processor.calls == 2
    assert message.calls[-1].startswith("nak ")  # retried later, with a backoff


async def test_without_a_gate_an_error_is_never_a_blip() -> None:
    processor = FlakyProcessor([ConnectionResetError("reset")])
    message = FakeMessage()
    await runner_with(processor, AlwaysUp())._settle(message, first_delivery())  # type: ignore[arg-type]
    assert processor.calls == 1
    assert message.calls[-1].startswith("nak ")


def first_delivery() -> Delivery:
    item = SimpleNamespace(item_id="i1")
    return Delivery(item=item, attempt=1, last=False, stream_seq=1)  # type: ignore[arg-type]
