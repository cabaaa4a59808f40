"""Finding decisions and their outcomes in the Redis streams, within bounds the Decisions page states.

Redis streams have no secondary index, so every lookup here is a bounded range read:
- by decision id: the id starts with the hex of the millisecond the answer was made (serving/decisions.py,
  `new_decision_id`) and the flusher XADDs its entry a little later, so an XRANGE from that millisecond finds it
  among the first few entries (then, for a worker clock ahead of Redis's, a short read backwards);
- by customer: the decision log keeps each customer's newest decision ids in a list (pantry.keys.decisions_of,
  written with each entry by serving/decisions.py), and each is found as above. A scan of the log instead costs
  ~12 us per entry (~1.1 KB each): the newest 50,000 of 500,000 took ~1.1 s, and within the request's Redis budget
  a scan reached only the newest 1,000-2,250, which held none of most customers' decisions;
- outcomes: the live flow keeps only KPI totals (streaming/outcomes.py), no per-decision record, so the outcome
  events are read from the event stream (time-based ids) from the decision's time on, a bounded count, keeping those
  that carry this decision id. Only the stream of the decision's customer's partition is read (pantry/partitions.py:
  a customer's events are all there); a decision without a known customer has its partitions read in turn.

Reads go through the worker's raw pipeline (hiredis-parsed replies, no per-field dict) under `svc.store.call`; a
read Redis does not answer ends the scan ("store"), and the page says so.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import AsyncIterator
from typing import Final, Literal

import msgspec

from pantry.events import Event, InvalidEvent, decode_msgpack
from pantry.keys import DECISIONS_STREAM, EVENT_FIELD, decisions_of
from pantry.partitions import events_stream, events_streams, partition_of
from serving.decisions import DecisionRow, decode_entry
from serving.redis_guard import StoreUnavailable
from serving.services import Services

DECISION_ID: Final = re.compile(r"[0-9a-f]{1,12}-[0-9a-f]{16}")  # new_decision_id: hex ms, "-", 16 hex digits
DECISION_ID_MAX_CHARS: Final = 29
FLUSH_WINDOW_MS: Final = 30_000  # an entry is XADDed at most this long after its id's time (the flusher's queue)
CLOCK_SLACK_MS: Final = 2_000  # ... or this much before it, when the worker's clock runs ahead of Redis's
ID_FORWARD_MAX: Final = 2_000  # entries read from the id's time on
ID_BACKWARD_MAX: Final = 500  # entries read back from it
OUTCOME_SCAN_MAX: Final = 5_000  # events read at most from the decision's time on (~0.2 KB each)
OUTCOME_SLACK_MS: Final = 1_000  # read events from this long before the decision (a client's clock, Redis's)
DECISION_CHUNK: Final = 250  # entries per read: ~3 ms of Redis each, so no read holds Redis up for long
EVENT_CHUNK: Final = 500
DEFAULT_LIMIT_S: Final = 0.15  # time limit of a page's scans when no Redis request budget is set

Stopped = Literal["found", "end", "count", "time", "store"]


class Scan(msgspec.Struct):
    """What one bounded read covered, for the page to state: entries read, the stream times (ms) they span, and why
    it stopped: found what it looked for, reached the end of its range, its count bound, its time limit, or Redis
    did not answer."""

    entries: int = 0
    oldest_ms: int | None = None
    newest_ms: int | None = None
    stopped: Stopped = "end"

    def saw(self, rows: list) -> None:
        if not rows:
            return
        self.entries += len(rows)
        for entry_id in (rows[0][0], rows[-1][0]):
            ms = stream_ms(entry_id)
            self.oldest_ms = ms if self.oldest_ms is None else min(self.oldest_ms, ms)
            self.newest_ms = ms if self.newest_ms is None else max(self.newest_ms, ms)

    def stop_at(self, rows: list, i: int, reverse: bool) -> None:
        """Found what was looked for at rows[i]: the entries after it in this chunk were read but not searched."""
        self.stopped = "found"
        unsearched = rows[i + 1:]
        self.entries -= len(unsearched)
        if unsearched:
            ms = stream_ms(rows[i][0])
            if reverse:
                self.oldest_ms = ms
            else:
                self.newest_ms = ms

    def joined(self, other: Scan) -> Scan:
        """The two reads of one lookup as one (the later one's reason to stop)."""
        spans = [m for m in (self.oldest_ms, self.newest_ms, other.oldest_ms, other.newest_ms) if m is not None]
        return Scan(self.entries + other.entries, min(spans, default=None), max(spans, default=None), other.stopped)


def stream_ms(entry_id: bytes) -> int:
    return int(entry_id.split(b"-", 1)[0])


def id_time_ms(decision_id: str) -> int:
    """The millisecond a (well-formed) decision id was made."""
    return int(decision_id.split("-", 1)[0], 16)


def scan_deadline(svc: Services) -> float:
    """When a page's scans stop (perf_counter): 60% of the request's Redis budget from now, leaving the rest for the
    session read done before and a last read running over."""
    budget = svc.settings.redis_request_budget_s
    return time.perf_counter() + (0.6 * budget if budget else DEFAULT_LIMIT_S)


def _field(flat: list[bytes], name: bytes, at: int) -> bytes | None:
    """The value of `name` in an entry's [field, value, ...] list; `at` is where DecisionLog.record puts it."""
    if at + 1 < len(flat) and flat[at] == name:
        return flat[at + 1]
    for i in range(0, len(flat) - 1, 2):
        if flat[i] == name:
            return flat[i + 1]
    return None


def _pairs(flat: list[bytes]) -> dict[bytes, bytes]:
    return dict(zip(flat[::2], flat[1::2], strict=False))


async def _chunks(svc: Services, stream: str, start: bytes, end: bytes, *, reverse: bool, max_entries: int,
                  chunk: int, deadline: float, scan: Scan) -> AsyncIterator[list]:
    """Chunks of raw entries ([id, [field, value, ...]]) from `start` towards `end` (both inclusive; newest first when
    `reverse`) until the range ends, `max_entries` were read, `deadline` passed or Redis did not answer; `scan`
    counts what was read and why it stopped. The consumer may stop early (and set scan.stopped)."""
    command = b"XREVRANGE" if reverse else b"XRANGE"
    key = stream.encode()
    while True:
        if scan.entries >= max_entries:
            scan.stopped = "count"
            return
        if time.perf_counter() >= deadline:
            scan.stopped = "time"
            return
        count = min(chunk, max_entries - scan.entries)
        read = functools.partial(svc.pipeline.run, [(command, key, start, end, b"COUNT", count)])
        try:
            (rows,) = await svc.store.call(read)
        except StoreUnavailable:
            scan.stopped = "store"
            return
        scan.saw(rows)
        if rows:
            yield rows
        if len(rows) < count:
            scan.stopped = "end"
            return
        start = b"(" + rows[-1][0]


async def find_decision(svc: Services, decision_id: str, deadline: float) -> tuple[DecisionRow | None, Scan]:
    """The log entry of `decision_id` (well-formed: see DECISION_ID), or None, and what was read to look for it."""
    ms = id_time_ms(decision_id)
    needle = decision_id.encode()
    forward = Scan()
    async for rows in _chunks(svc, DECISIONS_STREAM, b"%d" % ms, b"%d" % (ms + FLUSH_WINDOW_MS), reverse=False,
                              max_entries=ID_FORWARD_MAX, chunk=100, deadline=deadline, scan=forward):
        for i, (entry_id, flat) in enumerate(rows):
            if _field(flat, b"decision_id", 0) == needle:
                forward.stop_at(rows, i, reverse=False)
                return decode_entry(entry_id, _pairs(flat)), forward
    if forward.stopped == "store":
        return None, forward
    back = Scan()
    async for rows in _chunks(svc, DECISIONS_STREAM, b"%d" % max(ms - 1, 0), b"%d" % max(ms - CLOCK_SLACK_MS, 0),
                              reverse=True, max_entries=ID_BACKWARD_MAX, chunk=100, deadline=deadline, scan=back):
        for i, (entry_id, flat) in enumerate(rows):
            if _field(flat, b"decision_id", 0) == needle:
                back.stop_at(rows, i, reverse=True)
                return decode_entry(entry_id, _pairs(flat)), forward.joined(back)
    return None, forward.joined(back)


class CustomerDecisions(msgspec.Struct):
    """A customer's newest decisions from its index: those found in the log (newest first), the indexed ids no
    longer in the log (trimmed by its bounds), those not looked for (the page's time limit), and whether Redis
    answered."""

    found: list[DecisionRow]
    missing: list[str]
    unsearched: list[str] = msgspec.field(default_factory=list)
    reachable: bool = True


NEAR_ID: Final = 20  # entries read from each indexed id's time in the one-round-trip first pass


async def customer_decisions(svc: Services, customer_id: int, deadline: float) -> CustomerDecisions:
    """One round trip for the index, one for the entries at each indexed id's time (an entry is XADDed moments after
    its id's time, so it is nearly always among the first NEAR_ID), then `find_decision` for any not found there."""
    index = decisions_of(customer_id).encode()
    try:
        (raw_ids,) = await svc.store.call(functools.partial(svc.pipeline.run, [(b"LRANGE", index, b"0", b"-1")]))
        ids = [d for d in (r.decode() for r in raw_ids) if DECISION_ID.fullmatch(d)]
        near = await svc.store.call(functools.partial(svc.pipeline.run, [
            (b"XRANGE", DECISIONS_STREAM.encode(), b"%d" % id_time_ms(d), b"+", b"COUNT", b"%d" % NEAR_ID)
            for d in ids]))
    except StoreUnavailable:
        return CustomerDecisions([], [], reachable=False)
    out = CustomerDecisions([], [])
    for decision_id, rows in zip(ids, near, strict=True):
        needle = decision_id.encode()
        hit = next(((entry_id, flat) for entry_id, flat in rows if _field(flat, b"decision_id", 0) == needle), None)
        if hit is not None:
            out.found.append(decode_entry(hit[0], _pairs(hit[1])))
            continue
        row, scan = await find_decision(svc, decision_id, deadline)
        if row is not None:
            out.found.append(row)
        elif scan.stopped in ("time", "store"):
            out.unsearched.append(decision_id)
            out.reachable = out.reachable and scan.stopped != "store"
        else:
            out.missing.append(decision_id)
    return out


class Reported(msgspec.Struct, frozen=True):
    """An outcome event that names a decision, and when the stream received it (ms)."""

    received_ms: int
    event: Event


def outcome_streams(partitions: int, customer_id: int | None) -> list[str]:
    """The streams a decision's outcome events are in: its customer's partition's (-1, decode_entry's "no customer
    field", or None: every partition's)."""
    if customer_id is None or customer_id < 0:
        return events_streams(partitions)
    return [events_stream(partition_of(customer_id, None, partitions))]


async def outcomes_of(svc: Services, decision_id: str, from_ms: int, deadline: float,
                      customer_id: int | None = None) -> tuple[list[Reported], Scan]:
    """The events carrying `decision_id` among the first OUTCOME_SCAN_MAX from `from_ms` (less OUTCOME_SLACK_MS) on
    in the stream of the decision's customer (`outcome_streams`), each event id once (a client's retry is the same
    event), oldest first."""
    needle = decision_id.encode()
    found: list[Reported] = []
    seen: set[str] = set()
    scan = Scan()  # one for every stream read: the count bound and the time limit are the lookup's
    for stream in outcome_streams(svc.settings.stream_partitions, customer_id):
        async for rows in _chunks(svc, stream, b"%d" % max(from_ms - OUTCOME_SLACK_MS, 0), b"+", reverse=False,
                                  max_entries=OUTCOME_SCAN_MAX, chunk=EVENT_CHUNK, deadline=deadline, scan=scan):
            for entry_id, flat in rows:
                payload = _field(flat, EVENT_FIELD, 0)
                if payload is None or needle not in payload:  # a bytes search before decoding: most are others'
                    continue
                try:
                    event = decode_msgpack(payload)
                except InvalidEvent:
                    continue
                if getattr(event, "decision_id", None) == decision_id and event.event_id not in seen:
                    seen.add(event.event_id)
                    found.append(Reported(stream_ms(entry_id), event))
        if scan.stopped != "end":  # a bound or Redis stopped this stream's read: the next would not be read either
            break
    found.sort(key=lambda reported: reported.received_ms)  # several streams: oldest first across them
    return found, scan
