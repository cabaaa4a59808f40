"""Live refreshes of a shard's entities (streaming.shards): which entities a refresh looks at, and rolling them.

A live refresh is spread (the constants are streaming.shards'): every ROLL_EVERY_S a batch checks at most
CHECKS_PER_ROLL of its candidates (O(1) each from the cached next-change time) and rolls at most `refresh_slice` due
ones forward, so rolling windows never stall fresh events (after a long gap, e.g. live after a replay, the backlog
drains over several refreshes); a shard that got more than ROLL_MAX_EVENTS events in a batch is behind the stream
and skips rolling until it has caught up. The first refresh of a process lists every entity as a candidate. Each
entity checked and not due is then filed under its next-change time (`timers`, buckets of TIMER_BUCKET_S of event
time), so a later refresh lists only the entities whose time has come, those changed since the last refresh and the
last refresh's unchecked rest: its work grows with what is due, not with the ~630k store x product pairs a year
leaves (listing and checking all of them every 5 s was a fifth of a core). Neither the candidates nor the timers are
snapshotted: rolled-forward entities are in the state, and the first refresh after a restart lists every entity
again. A final refresh (end of a replay) rolls everything at once.
"""

from __future__ import annotations

import heapq
import math
from array import array

TIMER_BUCKET_S = 60.0  # event-time width of a bucket of the next-change timers (Refresh.timers)
# an entity changed at every refresh is filed again each time: past this many entries per entity the timers keep
# only each entity's earliest (a pass over them, amortised O(1) a filing)
TIMERS_PER_ENTITY = 4


class Refresh:
    """The refresh side of a shard logic. The subclass gives candidates() (every entity's key), changed() (the keys
    changed and not yet emitted), entities() (how many) and roll_one(key, as_of) (roll it forward if due, else
    file_timer it), and adds the keys of the entities it emits to `touched` (when `timed`)."""

    def __init__(self, refresh_slice: int) -> None:
        # candidates to roll forward to due_as_of (newest refresh), popped from the end: an int64 array, not a list,
        # so the young-generation GC does not visit every entity id in it (~20k per store shard)
        self.due = array("q")
        self.due_as_of = 0.0
        # live refreshes after the first list the due timers and the changed entities only (the module doc)
        self.timed = refresh_slice > 0
        self.listed_all = False
        self.timers: dict[int, array] = {}  # bucket (next change // TIMER_BUCKET_S) -> entity keys
        self.timer_buckets: list[int] = []  # heap of the buckets in `timers`
        self.timer_entries = 0
        self.touched: set[int] = set()  # entities changed since the last refresh (their next change moved)

    def roll_all(self, as_of: float) -> None:
        """Roll every due entity forward to as_of at once (the final refresh of a replay)."""
        self.due, self.due_as_of = self.candidates(), as_of
        self.roll(len(self.due), len(self.due))
        self.due = array("q")

    def refresh_candidates(self, as_of: float) -> array:
        """The entities a live refresh to as_of looks at: every one the first time; later the ones whose timers
        have come, those changed since the last refresh, and what the last refresh did not get to."""
        if not self.listed_all:
            self.listed_all = True
            self.touched = set()
            return self.candidates()
        keys = self.touched
        self.touched = set()
        keys.update(self.changed())
        keys.update(self.due)
        buckets, timers = self.timer_buckets, self.timers
        while buckets and buckets[0] * TIMER_BUCKET_S <= as_of:
            popped = timers.pop(heapq.heappop(buckets))
            self.timer_entries -= len(popped)
            keys.update(popped)
        return array("q", keys)

    def file_timer(self, key: int, next_change: float) -> None:
        """Look at entity `key` again at the first refresh at or after next_change (never: no timer)."""
        if not self.timed or next_change == math.inf:
            return
        bucket = int(next_change // TIMER_BUCKET_S)
        keys = self.timers.get(bucket)
        if keys is None:
            keys = self.timers[bucket] = array("q")
            heapq.heappush(self.timer_buckets, bucket)
        keys.append(key)
        self.timer_entries += 1
        if self.timer_entries > TIMERS_PER_ENTITY * max(self.entities(), 256):
            self.compact_timers()

    def compact_timers(self) -> None:
        """Keep each entity's earliest timer only: it is looked at then, and filed again at its next change."""
        seen: set[int] = set()
        timers: dict[int, array] = {}
        for bucket in sorted(self.timers):
            kept = array("q", [k for k in dict.fromkeys(self.timers[bucket]) if k not in seen])
            if kept:
                seen.update(kept)
                timers[bucket] = kept
        self.timers, self.timer_buckets = timers, sorted(timers)  # a sorted list is a heap
        self.timer_entries = len(seen)

    def entities(self) -> int:
        raise NotImplementedError

    def candidates(self) -> array:
        raise NotImplementedError

    def roll_one(self, key: int, as_of: float) -> bool:
        raise NotImplementedError

    def changed(self) -> list[int]:
        """The keys of the entities changed and not yet emitted (the subclass's dirty sets)."""
        raise NotImplementedError

    def roll(self, n: int, max_checks: int) -> None:
        """Roll up to n due entities forward to due_as_of, looking at no more than max_checks candidates: checking
        whether one is due is O(1) from the cached next-change time, and spreading the checks over the batches
        keeps a refresh that lists many (the first of a process) from stalling the live flow: a scan of all
        entities at once stalled it for 100+ ms, which was the p99 of freshness at 1,000 events/s."""
        due, as_of, roll_one = self.due, self.due_as_of, self.roll_one
        rolled = checked = 0
        while due and rolled < n and checked < max_checks:
            checked += 1
            if roll_one(due.pop(), as_of):
                rolled += 1

