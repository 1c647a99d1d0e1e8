"""Retries, backoff and a circuit breaker around engine calls.

The core is pure and table-tested: `backoff_delay` computes a wait, `Breaker` is a
state machine over an injected clock. `Resilient` is the thin adapter that runs an
engine call under a timeout, retries transient errors (honouring a provider's
`retry_after`), and keeps its engine's breaker.

Which errors count:

- retryable `EngineError`s (timeouts, 429, 5xx, model loading) are retried, and
  count against the breaker;
- `engine_unavailable` ones that are not retryable (bad key, unknown model) are not
  retried but count against the breaker: the engine cannot serve anyone;
- other errors (`engine_failed`, not retryable: this image was refused) are neither
  retried nor counted: the engine is healthy, the image is not.
"""

from __future__ import annotations

import asyncio
import enum
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from PIL import Image

from lumiku_bgremover.contracts.codes import FailCode
from lumiku_bgremover.engine_settings import Resilience
from lumiku_bgremover.engines.base import Engine, EngineError

__all__ = [
    "Breaker",
    "BreakerOpen",
    "BreakerState",
    "Clock",
    "EngineTimeout",
    "Resilient",
    "Sleep",
    "backoff_delay",
    "counts_against_breaker",
]

#: `clock() -> seconds`, monotonic.
Clock = Callable[[], float]
#: `await sleep(seconds)`.
Sleep = Callable[[float], Awaitable[object]]
#: `jitter() -> [0, 1)`.
Jitter = Callable[[], float]


def backoff_delay(
    attempt: int,
    *,
    base_s: float,
    cap_s: float,
    jitter: float,
    retry_after_s: float | None = None,
) -> float:
    """Seconds to wait before retry number `attempt` (1 = the first retry).

    Exponential with full jitter, `jitter * min(cap, base * 2 ** (attempt - 1))`,
    but never less than the provider's `retry_after_s` when it gave one.
    """
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, got {attempt}")
    if not 0.0 <= jitter <= 1.0:
        raise ValueError(f"jitter must be within [0, 1], got {jitter}")
    ceiling = min(cap_s, base_s * 2.0 ** min(attempt - 1, 60))
    delay = jitter * ceiling
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return delay


class BreakerState(enum.Enum):
    """Closed: calls pass. Open: calls fail fast. Half-open: one probe call passes."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Breaker:
    """A circuit breaker: `failures` in a row open it for `cooldown_s`, then one probe.

    Pure state over an injected `clock`: `allow()` says whether a call may go now
    (and, when the cool-down has passed, lets exactly one probe through),
    `record(ok)` reports how that call went.
    """

    def __init__(self, *, failures: int, cooldown_s: float, clock: Clock) -> None:
        if failures < 1:
            raise ValueError(f"failures must be >= 1, got {failures}")
        self._threshold, self._cooldown, self._clock = failures, cooldown_s, clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False

    @property
    def state(self) -> BreakerState:
        """The state now (an open breaker past its cool-down reads half-open)."""
        if self._state is BreakerState.OPEN and self._cooled():
            return BreakerState.HALF_OPEN
        return self._state

    def _cooled(self) -> bool:
        return self._clock() >= self._opened_at + self._cooldown

    def retry_in(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when it would now)."""
        if self._state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self._cooldown - self._clock())

    def allow(self) -> bool:
        """Whether a call may go now; a half-open breaker admits one probe at a time."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN or self._probing:
            return False
        self._state, self._probing = BreakerState.HALF_OPEN, True
        return True

    def record(self, *, ok: bool) -> None:
        """Report the outcome of an allowed call."""
        self._probing = False
        if ok:
            self._state, self._failures = BreakerState.CLOSED, 0
            return
        self._failures += 1
        if self._state is BreakerState.HALF_OPEN or self._failures >= self._threshold:
            self._state, self._opened_at = BreakerState.OPEN, self._clock()

    def release(self) -> None:
        """Forget an allowed call that neither succeeded nor failed (cancelled)."""
        self._probing = False


class BreakerOpen(EngineError):  # noqa: N818 - reads as a state, like ModelNotFound
    """The engine's breaker is open: the call was not made (retryable later)."""

    def __init__(self, engine: str, retry_in_s: float) -> None:
        super().__init__(
            f"engine {engine!r} is failing; its circuit breaker is open for "
            f"another {retry_in_s:.1f} s",
            code=FailCode.ENGINE_UNAVAILABLE,
            retryable=True,
        )
        self.engine = engine
        self.retry_after_s: float | None = retry_in_s


class EngineTimeout(EngineError):  # noqa: N818 - reads as an event, like ModelNotFound
    """An engine call took longer than its timeout (retryable)."""

    def __init__(self, engine: str, timeout_s: float) -> None:
        super().__init__(
            f"engine {engine!r} did not answer within {timeout_s:g} s",
            code=FailCode.ENGINE_UNAVAILABLE,
            retryable=True,
        )


def counts_against_breaker(error: EngineError) -> bool:
    """Whether `error` says the engine (not this one image, not our side) is in trouble."""
    return not error.ours and (error.retryable or error.code is FailCode.ENGINE_UNAVAILABLE)


@dataclass(frozen=True, slots=True)
class Attempted:
    """A successful call and how many attempts it took."""

    matte: Image.Image
    attempts: int


_NO_WAIT: Final = 0.0


class Resilient:
    """Runs one engine's calls under a timeout, retries and its circuit breaker."""

    def __init__(
        self,
        engine: Engine,
        policy: Resilience,
        *,
        timeout_s: float,
        clock: Clock,
        sleep: Sleep = asyncio.sleep,
        jitter: Jitter = random.random,
    ) -> None:
        self.engine, self._policy, self._timeout = engine, policy, timeout_s
        self._sleep, self._jitter = sleep, jitter
        self.breaker = Breaker(
            failures=policy.breaker_failures, cooldown_s=policy.breaker_cooldown_s, clock=clock
        )

    @property
    def name(self) -> str:
        """The wrapped engine's name."""
        return self.engine.name

    async def call(self, image: Image.Image, model: str) -> Attempted:
        """The matte, after up to `attempts` tries; raises the last `EngineError`."""
        attempt = 1
        while True:
            try:
                return Attempted(await self._once(image, model), attempt)
            except EngineError as error:
                wait = self._wait_before_retry(error, attempt)
                if wait is None:
                    raise
            await self._sleep(wait)
            attempt += 1

    def _wait_before_retry(self, error: EngineError, attempt: int) -> float | None:
        """Seconds to wait before the next attempt, or None to give up now."""
        if not error.retryable or isinstance(error, BreakerOpen):
            return None
        if attempt >= self._policy.attempts:
            return None
        wait = backoff_delay(
            attempt,
            base_s=self._policy.backoff_base_s,
            cap_s=self._policy.backoff_cap_s,
            jitter=self._jitter(),
            retry_after_s=getattr(error, "retry_after_s", None),
        )
        return None if wait > self._policy.max_wait_s else max(wait, _NO_WAIT)

    async def _once(self, image: Image.Image, model: str) -> Image.Image:
        if not self.breaker.allow():
            raise BreakerOpen(self.name, self.breaker.retry_in())
        try:
            async with asyncio.timeout(self._timeout):
                matte = await self.engine.matte(image, model=model)
        except TimeoutError:
            self.breaker.record(ok=False)
            raise EngineTimeout(self.name, self._timeout) from None
        except EngineError as error:
            if error.ours:  # neither a success nor a failure of the engine
                self.breaker.release()
            else:
                self.breaker.record(ok=not counts_against_breaker(error))
            raise
        except BaseException:
            self.breaker.release()
            raise
        self.breaker.record(ok=True)
        return matte
