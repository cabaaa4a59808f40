"""Wait times: realistic think time by default, or pacing to a target total request rate (`pantry load --rate`).

Pacing counts requests, not tasks (a grocery order flow makes four requests per task), so `--rate 300` with 50 users
means each user aims at 6 requests/s whatever its class. A user that falls behind does not burst to catch up.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

WaitTime = Callable[[Any], float]


def paced_or(think: WaitTime) -> WaitTime:
    def wait(user: Any) -> float:
        options = getattr(user.environment, "parsed_options", None)
        rate = float(getattr(options, "pantry_rate", 0) or 0)
        if rate <= 0:
            user.requests_since_wait = 0
            return think(user)
        users = max(int(getattr(options, "num_users", 1) or 1), 1)
        interval = users / rate  # seconds between this user's requests
        now = time.monotonic()
        made = max(getattr(user, "requests_since_wait", 1), 1)
        user.requests_since_wait = 0
        next_start = getattr(user, "next_start", now) + made * interval
        if next_start < now:  # behind schedule: start now, no catch-up burst
            next_start = now
        user.next_start = next_start
        return next_start - now

    return wait
