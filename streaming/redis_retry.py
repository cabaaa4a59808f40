"""The live flow across a Redis restart or hang: what reads or writes Redis waits and tries again instead of letting
the error end the whole Bytewax flow.

A killed or SIGSTOPped Redis raises ConnectionError (refused, reset, a broken pipe on a stale connection, LOADING
while it reads its AOF back) or TimeoutError. The source returns no batch meanwhile (its state is the last entry id
read, so nothing is skipped); the sinks retry their writes, which are absolute (HSET of whole values, the heartbeat,
the counters): writing one twice is harmless (a dead letter may be written twice).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import redis

log = logging.getLogger("pantry.streaming.redis")

T = TypeVar("T")
# redis-py's errors of an unreachable or hung server (BusyLoadingError is a ConnectionError), and the socket's own
REDIS_DOWN: tuple[type[BaseException], ...] = (redis.ConnectionError, redis.TimeoutError, OSError)
FIRST_BACKOFF_S = 0.2
MAX_BACKOFF_S = 1.0
GIVE_UP_S = 300.0  # a write still failing after this long ends the flow (its supervisor starts it again)


class Backoff:
    """0.2 s, doubled at each failure in a row, at most 1 s; reset by a success."""

    def __init__(self) -> None:
        self.delay = 0.0
        self.since: float | None = None

    def failed(self, what: str, exc: BaseException) -> float:
        """The seconds to wait before the next attempt (logged at the first failure of a run)."""
        if self.since is None:
            self.since = time.monotonic()
            log.warning("%s: redis unavailable (%s: %s); retrying", what, type(exc).__name__, exc)
        self.delay = min(MAX_BACKOFF_S, self.delay * 2) if self.delay else FIRST_BACKOFF_S
        return self.delay

    def ok(self, what: str) -> None:
        if self.since is not None:
            log.warning("%s: redis back after %.1f s", what, time.monotonic() - self.since)
        self.delay, self.since = 0.0, None

    @property
    def failing_for(self) -> float:
        return 0.0 if self.since is None else time.monotonic() - self.since


def retried(what: str, fn: Callable[[], T], give_up_s: float = GIVE_UP_S) -> T:
    """fn() until it does not raise REDIS_DOWN, with the backoff; its error once it has failed for give_up_s."""
    backoff = Backoff()
    while True:
        try:
            result = fn()
        except REDIS_DOWN as exc:
            if backoff.failing_for > give_up_s:
                raise
            time.sleep(backoff.failed(what, exc))
            continue
        backoff.ok(what)
        return result
