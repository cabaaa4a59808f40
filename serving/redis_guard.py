"""Guarding Redis calls: a retry budget and a circuit breaker, so a sick Redis costs a request milliseconds, not a 5xx.

- Retry budget: a failed call is retried once only while retries stay under `ratio` of recent calls (plus a small
  floor), so a dead Redis never doubles the load on itself.
- Circuit breaker: after `failures` consecutive failures the circuit opens for `open_s`; calls then fail at once
  (StoreUnavailable) and the caller answers from its fallback. After `open_s` one probe call goes through
  (half-open); success closes the circuit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import ClusterDownError, RedisClusterException
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# Only these mean "Redis is sick": a reply error (WRONGTYPE, ...) is a bug to surface, and a slow event loop is load,
# not an outage. Timeouts are the client's socket timeouts, which start once a command has been sent.
# a Redis Cluster adds two: no node reachable / no slot map (RedisClusterException) and CLUSTERDOWN replies
UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError, OSError,
               RedisClusterException, ClusterDownError)

T = TypeVar("T")


class StoreUnavailable(Exception):
    """Redis could not be reached (or the breaker is open): answer from the fallback."""


class RetryBudget:
    def __init__(self, ratio: float = 0.1, floor: int = 10, window_s: float = 10.0):
        self.ratio, self.floor, self.window_s = ratio, floor, window_s
        self._start = time.monotonic()
        self._calls = 0
        self._retries = 0

    def _roll(self) -> None:
        now = time.monotonic()
        if now - self._start > self.window_s:
            self._start, self._calls, self._retries = now, 0, 0

    def record_call(self) -> None:
        self._roll()
        self._calls += 1

    def try_spend(self) -> bool:
        self._roll()
        if self._retries < self.floor + self.ratio * self._calls:
            self._retries += 1
            return True
        return False


class CircuitBreaker:
    def __init__(self, failures: int = 5, open_s: float = 1.0):
        self.failures, self.open_s = failures, open_s
        self._consecutive = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        return "half_open" if time.monotonic() - self._opened_at >= self.open_s else "open"

    def allow(self) -> bool:
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._probing:
            self._probing = True
            return True
        return False

    def success(self) -> None:
        self._consecutive = 0
        self._opened_at = None
        self._probing = False

    def failure(self) -> None:
        self._consecutive += 1
        self._probing = False
        if self._opened_at is not None or self._consecutive >= self.failures:
            self._opened_at = time.monotonic()


class LoopLag:
    """How late this event loop runs its timers (a 10 ms tick's overshoot, the worst of the last ~second).

    A socket timeout's timer and the reply's wake-up are both served by the loop: on a saturated loop the reply can
    be sitting in the socket while the timer fires. With this, a timeout on a late loop is blamed on load, not Redis.
    """

    def __init__(self, tick_s: float = 0.01, window_s: float = 1.0):
        self.tick_s, self.window_s = tick_s, window_s
        self._worst = 0.0
        self._worst_at = 0.0

    @property
    def recent_s(self) -> float:
        return self._worst if time.monotonic() - self._worst_at < self.window_s else 0.0

    async def run(self) -> None:
        while True:
            start = time.monotonic()
            await asyncio.sleep(self.tick_s)
            now = time.monotonic()
            lag = now - start - self.tick_s
            if lag >= self.recent_s:
                self._worst, self._worst_at = lag, now


class GuardedStore:
    """Runs a Redis coroutine under the breaker and the retry budget; raises StoreUnavailable on failure.

    A timeout while the loop itself runs late (LoopLag above `slack_s`) is load, not an outage: it is retried (up to
    twice) and never counts towards opening the circuit."""

    def __init__(self, breaker: CircuitBreaker | None = None, budget: RetryBudget | None = None,
                 lag: LoopLag | None = None, slack_s: float = 0.025):
        self.breaker = breaker or CircuitBreaker()
        self.budget = budget or RetryBudget()
        self.lag = lag or LoopLag()
        self.slack_s = slack_s  # ~ half the socket timeout

    async def call(self, make: Callable[[], Awaitable[T]]) -> T:
        if not self.breaker.allow():
            raise StoreUnavailable("circuit open")
        self.budget.record_call()
        attempts = 0
        while True:
            attempts += 1
            try:
                # no wall-clock cap here: it would also count time queued behind other requests on a saturated
                # loop and open the circuit under pure load (the socket timeouts bound Redis itself)
                result = await make()
            except UNAVAILABLE as exc:
                busy_loop = isinstance(exc, RedisTimeoutError | TimeoutError) and self.lag.recent_s > self.slack_s
                if (busy_loop and attempts < 3) or (attempts == 1 and self.budget.try_spend()):
                    continue
                if not busy_loop:
                    self.breaker.failure()
                raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
            self.breaker.success()
            return result
