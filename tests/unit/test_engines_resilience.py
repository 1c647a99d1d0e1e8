"""The pure resilience core: backoff delays, the breaker's state machine, Retry-After."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from PIL import Image

from lumiku_bgremover.contracts.codes import FailCode
from lumiku_bgremover.engine_settings import Resilience
from lumiku_bgremover.engines import EngineError
from lumiku_bgremover.engines.hosted import parse_retry_after
from lumiku_bgremover.engines.resilience import (
    Breaker,
    BreakerOpen,
    BreakerState,
    Resilient,
    backoff_delay,
    counts_against_breaker,
)
from lumiku_bgremover.engines.segmind import reset_in


@pytest.mark.parametrize(
    ("attempt", "jitter", "retry_after", "expected"),
    [
        (1, 1.0, None, 0.5),
        (2, 1.0, None, 1.0),
        (3, 1.0, None, 2.0),
        (5, 1.0, None, 8.0),
        (6, 1.0, None, 10.0),  # capped
        (60, 1.0, None, 10.0),
        (3, 0.5, None, 1.0),  # full jitter scales the ceiling
        (3, 0.0, None, 0.0),
        (1, 1.0, 7.0, 7.0),  # Retry-After is a floor
        (5, 1.0, 2.0, 8.0),  # ...not a ceiling
        (1, 0.0, 0.0, 0.0),
    ],
)
def test_backoff_delay(
    attempt: int, jitter: float, retry_after: float | None, expected: float
) -> None:
    delay = backoff_delay(attempt, base_s=0.5, cap_s=10.0, jitter=jitter, retry_after_s=retry_after)
    assert delay == pytest.approx(expected)


@pytest.mark.parametrize(("attempt", "jitter"), [(0, 0.5), (1, -0.1), (1, 1.5)])
def test_backoff_refuses_nonsense(attempt: int, jitter: float) -> None:
    with pytest.raises(ValueError, match=r"must be|counts from"):
        backoff_delay(attempt, base_s=1, cap_s=2, jitter=jitter)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


#: (event, expected state after it). Events: "ok", "fail", "allow" (must be True),
#: "deny" (allow must be False), "+N" (advance the clock N seconds).
BREAKER_SCRIPTS = {
    "stays closed below the threshold": [
        ("fail", BreakerState.CLOSED), ("fail", BreakerState.CLOSED),
        ("allow", BreakerState.CLOSED),
    ],
    "a success resets the count": [
        ("fail", BreakerState.CLOSED), ("fail", BreakerState.CLOSED), ("ok", BreakerState.CLOSED),
        ("fail", BreakerState.CLOSED), ("fail", BreakerState.CLOSED),
    ],
    "opens at the threshold and fails fast": [
        ("fail", BreakerState.CLOSED), ("fail", BreakerState.CLOSED), ("fail", BreakerState.OPEN),
        ("deny", BreakerState.OPEN), ("+29.9", BreakerState.OPEN), ("deny", BreakerState.OPEN),
    ],
    "half-open after the cool-down lets one probe through": [
        ("fail", BreakerState.CLOSED), ("fail", BreakerState.CLOSED), ("fail", BreakerState.OPEN),
        ("+30", BreakerState.HALF_OPEN), ("allow", BreakerState.HALF_OPEN),
        ("deny", BreakerState.HALF_OPEN),
    ],
    "a good probe closes it": [
        ("fail", BreakerState.CLOSED), ("fail", BreakerState.CLOSED), ("fail", BreakerState.OPEN),
        ("+31", BreakerState.HALF_OPEN), ("allow", BreakerState.HALF_OPEN),
        ("ok", BreakerState.CLOSED), ("allow", BreakerState.CLOSED), ("fail", BreakerState.CLOSED),
    ],
    "a bad probe opens it again for a full cool-down": [
        ("fail", BreakerState.CLOSED), ("fail", BreakerState.CLOSED), ("fail", BreakerState.OPEN),
        ("+30", BreakerState.HALF_OPEN), ("allow", BreakerState.HALF_OPEN),
        ("fail", BreakerState.OPEN), ("+29", BreakerState.OPEN), ("deny", BreakerState.OPEN),
        ("+1", BreakerState.HALF_OPEN),
    ],
}  # fmt: skip


@pytest.mark.parametrize("script", sorted(BREAKER_SCRIPTS))
def test_breaker_state_machine(script: str) -> None:
    clock = Clock()
    breaker = Breaker(failures=3, cooldown_s=30.0, clock=clock)
    for step, (event, expected) in enumerate(BREAKER_SCRIPTS[script]):
        if event.startswith("+"):
            clock.now += float(event[1:])
        elif event in {"ok", "fail"}:
            breaker.record(ok=event == "ok")
        else:
            assert breaker.allow() is (event == "allow"), f"step {step}: {event}"
        assert breaker.state is expected, f"step {step}: {event}"


def test_breaker_says_when_it_will_let_a_probe_through() -> None:
    clock = Clock()
    breaker = Breaker(failures=1, cooldown_s=10.0, clock=clock)
    assert breaker.retry_in() == 0.0
    breaker.record(ok=False)
    clock.now += 4
    assert breaker.retry_in() == pytest.approx(6.0)
    with pytest.raises(ValueError, match="failures"):
        Breaker(failures=0, cooldown_s=1, clock=clock)


@pytest.mark.parametrize(
    ("error", "counts"),
    [
        (EngineError("image refused", code=FailCode.ENGINE_FAILED, retryable=False), False),
        (EngineError("bad answer", code=FailCode.ENGINE_FAILED, retryable=True), True),
        (EngineError("no key", code=FailCode.ENGINE_UNAVAILABLE, retryable=False), True),
        (EngineError("503", code=FailCode.ENGINE_UNAVAILABLE, retryable=True), True),
    ],
)
def test_which_errors_count_against_the_breaker(error: EngineError, counts: bool) -> None:
    assert counts_against_breaker(error) is counts


NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("7", 7.0),
        ("0.5", 0.5),
        ("-3", 0.0),
        ("Sun, 01 Mar 2026 12:00:30 GMT", 30.0),
        ("Sun, 01 Mar 2026 11:59:00 GMT", 0.0),
        ("soon", None),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, now=NOW) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("2026-03-01T12:00:05+00:00", 5.0),
        ("2026-03-01T12:00:05Z", 5.0),
        ("2026-03-01T12:00:05", 5.0),
        (str(NOW.timestamp() + 9), 9.0),
        ("garbage", None),
        (None, None),
    ],
)
def test_segmind_reset_header(header: str | None, expected: float | None) -> None:
    assert reset_in(header, now=NOW) == (pytest.approx(expected) if expected else expected)


class Flaky:
    name = "flaky"

    def __init__(self, *errors: EngineError) -> None:
        self.errors, self.calls = list(errors), 0

    async def matte(self, image: Image.Image, *, model: str) -> Image.Image:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return Image.new("L", image.size, 255)


async def test_permanent_errors_are_not_retried_and_open_nothing() -> None:
    engine = Flaky(EngineError("bad image", retryable=False))
    resilient = Resilient(engine, Resilience(attempts=3, breaker_failures=1), timeout_s=1,
                          clock=Clock())  # fmt: skip
    with pytest.raises(EngineError, match="bad image"):
        await resilient.call(Image.new("RGB", (2, 2)), "m")
    assert engine.calls == 1
    assert resilient.breaker.state is BreakerState.CLOSED


async def test_an_open_breaker_fails_fast_without_calling() -> None:
    transient = EngineError("503", code=FailCode.ENGINE_UNAVAILABLE, retryable=True)
    engine = Flaky(transient, transient)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    policy = Resilience(attempts=5, breaker_failures=2, breaker_cooldown_s=60)
    resilient = Resilient(engine, policy, timeout_s=1, clock=Clock(), sleep=sleep,
                          jitter=lambda: 0.0)  # fmt: skip
    with pytest.raises(BreakerOpen) as caught:
        await resilient.call(Image.new("RGB", (2, 2)), "m")
    assert engine.calls == 2
    assert (caught.value.code, caught.value.retryable) == (FailCode.ENGINE_UNAVAILABLE, True)
    assert caught.value.retry_after_s == pytest.approx(60.0)
