"""When this flow process expects its next epoch to close, for the steps that do their end-of-epoch work ahead of
the close (the shards' forked snapshots, streaming/forked_snapshots.py; the event archive's files,
streaming/event_archive.py), so that the close itself, which stops every step of the worker, stays short.

Bytewax's input advances each source partition's epoch every `epoch_interval` after the partition's previous
advance, and an epoch closes at a stateful step once every partition (on every process) has advanced. So the next
close is about one interval after the last one this process saw (`closed()`, called by the snapshots), and the first
about one interval after the flow started (`start()`). A guess only: a step that acts early keeps doing what the
close needs until it comes, however late; one that is not ready in time does its work at the close, as before.
"""

from __future__ import annotations

import time


class EpochClock:
    def __init__(self) -> None:
        self.interval_s = 0.0  # 0: no flow started in this process (nothing is ever due)
        self.last_close = time.monotonic()
        self.closes = 0  # closes seen: the epoch now open is the `closes`-th since the start

    def start(self, interval_s: float) -> None:
        self.interval_s, self.last_close = interval_s, time.monotonic()

    def closed(self) -> None:
        """An epoch closed: every snapshot calls this, the first of a close moves the clock (the others of the same
        close come within a fraction of the interval)."""
        now = time.monotonic()
        if now - self.last_close > self.interval_s / 2:
            self.last_close = now
            self.closes += 1

    def due(self, lead_s: float) -> bool:
        """Is the next close less than `lead_s` away (at most a quarter of the interval: a short one, as in tests
        that crash the flow on purpose, still has most of each epoch before it), or past due?"""
        lead_s = min(lead_s, self.interval_s / 4)
        return self.interval_s > 0 and time.monotonic() >= self.last_close + self.interval_s - lead_s


CLOCK = EpochClock()  # one per process: Bytewax's epochs are the flow's, shared by its worker threads
