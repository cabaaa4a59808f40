"""Which visit may start now: the ordering rule of the simulator (asyncio driver and Locust user alike).

Visits start in time order. A visit starts only when
  - fewer than `max_in_flight` visits are in flight,
  - no visit of the same household is in flight (a shopper's visits happen one after the other), and
  - every visit in flight is at most `window_s` of event time older than it.
So while a visit is in flight no event later than its time + window_s is posted, and with window_s under the
live flow's lateness bound (600 s, streaming/features/event.py) none of its events arrives late (the flow would
drop it). Within the window, visits run concurrently; across it, the event clock only moves forward.
"""

from __future__ import annotations

from collections import Counter

from load_tests.simulate.visits import Visit


class Schedule:
    def __init__(self, max_in_flight: int, window_s: float):
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.max_in_flight, self.window_s = max_in_flight, window_s
        self._times: Counter[float] = Counter()
        self._customers: Counter[int] = Counter()
        self.in_flight = 0

    def can_start(self, visit: Visit) -> bool:
        if self.in_flight >= self.max_in_flight or self._customers[visit.customer_id]:
            return False
        return not self._times or min(self._times) >= visit.t - self.window_s

    def start(self, visit: Visit) -> None:
        self._times[visit.t] += 1
        self._customers[visit.customer_id] += 1
        self.in_flight += 1

    def finish(self, visit: Visit) -> None:
        self._times[visit.t] -= 1
        if not self._times[visit.t]:
            del self._times[visit.t]
        self._customers[visit.customer_id] -= 1
        if not self._customers[visit.customer_id]:
            del self._customers[visit.customer_id]
        self.in_flight -= 1
