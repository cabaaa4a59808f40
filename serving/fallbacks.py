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

import hiredis
from redis.exceptions import RedisError

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


class GuardedStore:
    """Runs a Redis coroutine under the breaker and the retry budget; raises StoreUnavailable on failure."""

    def __init__(self, breaker: CircuitBreaker | None = None, budget: RetryBudget | None = None,
                 timeout_s: float = 0.25):
        self.breaker = breaker or CircuitBreaker()
        self.budget = budget or RetryBudget()
        self.timeout_s = timeout_s  # a hard cap over the socket timeouts (a pipeline is several reads)

    async def call(self, make: Callable[[], Awaitable[T]]) -> T:
        if not self.breaker.allow():
            raise StoreUnavailable("circuit open")
        self.budget.record_call()
        attempts = 0
        while True:
            attempts += 1
            try:
                async with asyncio.timeout(self.timeout_s):
                    result = await make()
            except (RedisError, OSError, TimeoutError, hiredis.HiredisError) as exc:
                if attempts == 1 and self.budget.try_spend():
                    continue
                self.breaker.failure()
                raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
            self.breaker.success()
            return result
