"""Guarding Redis calls: a retry budget and a circuit breaker, so a sick Redis costs a request milliseconds, not a 5xx.

- Retry budget: a failed call is retried once only while retries stay under `ratio` of recent calls (plus a small
  floor), so a dead Redis never doubles the load on itself.
- Circuit breaker: after `failures` consecutive failures the circuit opens for `open_s`; calls then fail at once
  (StoreUnavailable) and the caller answers from its fallback. After `open_s` one probe goes through (half-open);
  success closes the circuit. With `GuardedStore.watch` running (every serving worker runs it) the probe is a
  background PING, so no request ever waits on a hung Redis once the circuit is open; a probe that never reports
  (cancelled) lets the next one through after `open_s`.
- A timeout is not retried on reads (a hung Redis would only make the request wait twice; `retry_timeouts` for
  idempotent writes whose timeout may have come after the commit); a connection error is (within the budget): a
  restarted Redis refuses or resets at once. A call is tried at most twice.
- Time budget per request (`budget_s`, PANTRY_REDIS_REQUEST_BUDGET_S): every guarded Redis call of one HTTP request
  (the serving middleware opens a request with `begin_request`) shares a budget counted from its first call; a call
  that would run past it is cut (StoreUnavailable, not counted by the breaker: it may be load), a call made after it
  fails at once, and a timeout is retried only on a late event loop, with the circuit closed, and if a whole
  attempt (`attempt_s`, the socket timeout) still fits. With Redis hung, one request waits at most `budget_s`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar, Token
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

# the current request's Redis deadline (monotonic), set by its first guarded call; None outside a request
_REQUEST: ContextVar[list[float | None] | None] = ContextVar("pantry_redis_request", default=None)


def begin_request() -> Token:
    """A new request: its Redis time budget starts at its first guarded call. Pass the token to end_request."""
    return _REQUEST.set([None])


def end_request(token: Token) -> None:
    _REQUEST.reset(token)


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
        self._probing_since: float | None = None
        self.background_probe = False  # set by GuardedStore.watch: requests never probe

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        return "half_open" if time.monotonic() - self._opened_at >= self.open_s else "open"

    def allow(self, probe: bool = False) -> bool:
        """Whether a call may go to Redis now; `probe`: the caller is the background prober."""
        state = self.state
        if state == "closed":
            return True
        if state != "half_open" or (self.background_probe and not probe):
            return False
        now = time.monotonic()
        if self._probing_since is None or now - self._probing_since > self.open_s:
            self._probing_since = now
            return True
        return False

    def success(self) -> None:
        self._consecutive = 0
        self._opened_at = None
        self._probing_since = None

    def failure(self) -> None:
        self._consecutive += 1
        self._probing_since = None
        if self._opened_at is not None or self._consecutive >= self.failures:
            self._opened_at = time.monotonic()

    def abandoned(self) -> None:
        """A call ended without a verdict (cancelled): a probe it was does not block the next one."""
        self._probing_since = None


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
    """Runs a Redis coroutine under the breaker, the retry budget and the request's time budget; raises
    StoreUnavailable on failure.

    A timeout while the loop itself runs late (LoopLag above `slack_s`) is load, not an outage: it never counts
    towards opening the circuit, and is retried once if the circuit is closed and the request's budget still holds
    a whole attempt."""

    def __init__(self, breaker: CircuitBreaker | None = None, budget: RetryBudget | None = None,
                 lag: LoopLag | None = None, slack_s: float = 0.025, retry_timeouts: bool = False,
                 budget_s: float | None = None, attempt_s: float = 0.05):
        self.breaker = breaker or CircuitBreaker()
        self.budget = budget or RetryBudget()
        self.lag = lag or LoopLag()
        self.slack_s = slack_s  # ~ half the socket timeout
        self.retry_timeouts = retry_timeouts
        self.budget_s = budget_s  # None: no per-request time budget (the event writes have their own timeout)
        self.attempt_s = attempt_s  # what one attempt may take (the socket timeout)

    @property
    def closed(self) -> bool:
        """Calls go to Redis now (the circuit is closed)."""
        return self.breaker.state == "closed"

    def _deadline(self) -> float | None:
        cell = _REQUEST.get() if self.budget_s else None
        if cell is None:
            return None
        if cell[0] is None:
            cell[0] = time.monotonic() + self.budget_s
        return cell[0]

    async def call(self, make: Callable[[], Awaitable[T]], probe: bool = False) -> T:
        if not self.breaker.allow(probe):
            raise StoreUnavailable("circuit open")
        deadline = None if probe else self._deadline()
        if deadline is not None and deadline - time.monotonic() <= 0.001:
            raise StoreUnavailable("the request's Redis time budget is spent")
        self.budget.record_call()
        attempts = 0
        while True:
            attempts += 1
            left = None if deadline is None else deadline - time.monotonic()
            cut = False
            try:
                # no wall-clock cap beyond the request's budget: it would also count time queued behind other
                # requests on a saturated loop and open the circuit under pure load (the socket timeouts bound Redis)
                if left is not None and left < self.attempt_s:
                    cut = True  # less left than a socket timeout: this attempt gets only what is left
                    async with asyncio.timeout(max(left, 0.001)):
                        result = await make()
                else:
                    result = await make()
            except UNAVAILABLE as exc:
                timeout = isinstance(exc, RedisTimeoutError | TimeoutError)
                busy_loop = timeout and self.lag.recent_s > self.slack_s
                left = None if deadline is None else deadline - time.monotonic()
                if attempts == 1 and self._retry(timeout, busy_loop, left):
                    continue
                if not (busy_loop or (timeout and cut)):
                    self.breaker.failure()
                raise StoreUnavailable(f"{type(exc).__name__}: {exc}" if not (timeout and cut)
                                       else "the request's Redis time budget is spent") from exc
            except BaseException:
                self.breaker.abandoned()
                raise
            self.breaker.success()
            return result

    def _retry(self, timeout: bool, busy_loop: bool, left: float | None) -> bool:
        """After a first failed attempt: try once more?"""
        if timeout and not self.retry_timeouts:
            # only a late loop's timeout (load), with the circuit closed and a whole attempt left in the budget
            fits = left is None or left >= self.attempt_s
            return busy_loop and self.closed and fits
        if left is not None and left <= 0.001:
            return False
        return self.budget.try_spend()

    async def watch(self, ping: Callable[[], Awaitable[object]], every_s: float = 0.05) -> None:
        """The half-open probe, off the request path: while the circuit is open, PING every `open_s`; success
        closes it. Runs as long as the worker."""
        self.breaker.background_probe = True
        try:
            while True:
                await asyncio.sleep(every_s)
                if self.breaker.state != "half_open":
                    continue
                try:
                    await self.call(ping, probe=True)
                except StoreUnavailable:
                    pass
                except Exception:  # a reply error: Redis answers, so it is up
                    self.breaker.success()
        finally:
            self.breaker.background_probe = False
