"""The live flow as an ML engineer watches it: how far behind it is, how fast it goes, what it counted and the latest
events it rejected with their reasons. Everything from what the flow itself writes (streaming/sinks.py), for each
partition of the event stream (pantry/partitions.py): its heartbeat hash (Redis time, last entry id, processed), its
counters hash; and the dead-letter stream; in two pipelined round trips whatever the number of partitions.

Lag is two figures: the heartbeat's age and the age of the oldest pending entry of the event stream (both judged by
pantry.health, as /readyz does: the worst partition's), plus how many entries are pending (counted in Redis, capped
per partition, summed). The counters are the partitions' summed (pantry.partitions.merge_counters), the stream
length the partitions' streams' summed; each partition's own state is kept beside (`StreamStatus.partitions`).

Throughput needs two readings of a heartbeat's `processed` and `ts` (written once a second, in Redis time). The
flow keeps no history, so each worker keeps its own last readings of each partition (`ThroughputMeter`, in memory):
the first view after a start shows "n/a", later ones the partitions' rates summed, each since its newest earlier
reading at least MIN_WINDOW_S older.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final

import msgspec

from pantry.health import HEARTBEAT_EVERY_S, LiveFlow, assess_each, pending_range, redis_time_s, worst
from pantry.keys import DEAD_LETTER_STREAM
from pantry.partitions import counters_key, events_stream, heartbeat_key, merge_counters
from serving.services import Services

DEAD_LETTERS_SHOWN: Final = 20
PAYLOAD_SHOWN: Final = 240  # characters of a dead letter's payload on the page
PENDING_CAP: Final = 10_000  # entries counted after a heartbeat's last_id, per partition (more: "at least")
STALE_HEARTBEAT_S: Final = 10 * HEARTBEAT_EVERY_S  # flagged when Settings.live_max_age_s is 0 (not judged)
MIN_WINDOW_S: Final = 1.0  # the shortest span a throughput is measured over (the heartbeat beats once a second)
KEEP_READINGS_S: Final = 900.0
MAIN_COUNTERS: Final = ("processed", "late", "invalid", "duplicate")

# the pending entries counted where they are (only the count travels); exclusive start needs Redis >= 6.2, as
# pantry.health's XRANGE does
_COUNT_PENDING = """
return #redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', tonumber(ARGV[2]))
"""


class Reading(msgspec.Struct, frozen=True):
    ts: float  # the heartbeat's Redis time
    processed: int
    pid: str


class Throughput(msgspec.Struct, frozen=True):
    per_s: float
    window_s: float


class ThroughputMeter:
    """One worker's recent heartbeat readings of each partition, newest last."""

    def __init__(self) -> None:
        self.readings: dict[int, deque[Reading]] = {}

    def observe(self, reading: Reading, partition: int = 0) -> Throughput | None:
        """Record a reading of a partition's heartbeat; the processed rate since the newest earlier reading of the
        same flow process at least MIN_WINDOW_S older (None: no such reading yet, or the counter went back: a flow
        restarted from a snapshot)."""
        readings = self.readings.setdefault(partition, deque(maxlen=256))
        if not readings or reading.ts > readings[-1].ts:
            readings.append(reading)
        while readings and readings[0].ts < reading.ts - KEEP_READINGS_S:
            readings.popleft()
        for earlier in reversed(readings):
            span = reading.ts - earlier.ts
            if span >= MIN_WINDOW_S and earlier.pid == reading.pid:
                if reading.processed < earlier.processed:
                    return None
                return Throughput((reading.processed - earlier.processed) / span, span)
        return None

    def observe_all(self, readings: Sequence[Reading]) -> Throughput | None:
        """Record a reading of every partition (readings[p]: partition p's); the flow's rate: the partitions' rates
        summed, over the shortest of their windows (None: a partition has no rate yet)."""
        rates = [self.observe(reading, p) for p, reading in enumerate(readings)]
        if not rates or any(rate is None for rate in rates):
            return None
        return Throughput(sum(r.per_s for r in rates if r), min(r.window_s for r in rates if r))


class DeadLetter(msgspec.Struct, frozen=True):
    entry_id: str
    at: str  # UTC, from the entry id (Redis time of the XADD)
    reason: str
    payload: str  # decoded and cut to PAYLOAD_SHOWN characters
    size: int | None  # the payload's original size when the flow cut it (dead_letter_payload_bytes)


class StreamStatus(msgspec.Struct):
    flow: LiveFlow  # the worst partition's (pantry.health.worst)
    stale_after_s: float
    stream_length: int  # every partition's stream
    pending: int | None  # entries after each heartbeat's last_id, summed (None: a partition has no heartbeat)
    pending_capped: bool
    throughput: Throughput | None
    throughput_note: str  # why there is no throughput (empty when there is one)
    counters: dict[str, float]  # every counter of the partitions' counters hashes, summed
    max_event_at: str | None  # the newest event time the gates accepted (the flow's watermark source)
    dead_total: int
    dead_letters: list[DeadLetter]
    partitions: list[LiveFlow] = msgspec.field(default_factory=list)  # each partition's own, by number

    @property
    def other_counters(self) -> dict[str, float]:
        return {k: v for k, v in sorted(self.counters.items()) if k not in MAIN_COUNTERS and k != "max_event_ts"}


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _payload(raw: bytes) -> str:
    """The payload as JSON when it is msgpack (an event), else its printable characters (a payload the flow cut, or
    one that was never msgpack: binary shown as "·")."""
    try:
        text = msgspec.json.encode(msgspec.msgpack.decode(raw)).decode()
    except (msgspec.DecodeError, TypeError, ValueError, OverflowError):
        text = "".join(c if c.isprintable() and c != "\ufffd" else "·" for c in raw.decode(errors="replace"))
    return text if len(text) <= PAYLOAD_SHOWN else text[: PAYLOAD_SHOWN - 1] + "…"


def dead_letter(entry_id: bytes, fields: dict[bytes, bytes]) -> DeadLetter:
    eid = _text(entry_id)
    try:
        at = datetime.fromtimestamp(int(eid.split("-", 1)[0]) / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        at = "?"
    size = fields.get(b"size")
    return DeadLetter(eid, at, _text(fields.get(b"reason", b"")), _payload(fields.get(b"e", b"")),
                      int(size) if size and size.isdigit() else None)


async def _pending(svc: Services, beats: Sequence[dict]) -> tuple[list[bytes | None], list[int | None]]:
    """Each partition's first entry after its heartbeat's last_id and how many there are (capped), in one round trip;
    None for a partition without a heartbeat."""
    oldest: list[bytes | None] = [None] * len(beats)
    pending: list[int | None] = [None] * len(beats)
    beating = [p for p, beat in enumerate(beats) if beat]
    if not beating:
        return oldest, pending

    async def second():
        pipe = svc.redis.pipeline(transaction=False)
        for p in beating:
            start, _ = pending_range(beats[p])
            pipe.xrange(events_stream(p), start, "+", count=1)
            pipe.eval(_COUNT_PENDING, 1, events_stream(p), start, PENDING_CAP)
        return await pipe.execute()

    replies = await svc.store.call(second)
    for i, p in enumerate(beating):
        first_pending, count = replies[2 * i], replies[2 * i + 1]
        oldest[p] = first_pending[0][0] if first_pending else None
        pending[p] = int(count)
    return oldest, pending


def _throughput(meter: ThroughputMeter, beats: Sequence[dict], flow: LiveFlow) -> tuple[Throughput | None, str]:
    """The flow's throughput from a reading of every partition's heartbeat, or why there is none."""
    readings = []
    for p, beat in enumerate(beats):
        fields = {_text(k): _text(v) for k, v in beat.items()}
        try:
            readings.append(Reading(float(fields["ts"]), int(float(fields.get("processed", "0"))),
                                    fields.get("pid", "")))
        except (KeyError, ValueError):
            return None, "no heartbeat" if len(beats) == 1 else f"no heartbeat of partition {p}"
    throughput = meter.observe_all(readings)
    if throughput is not None:
        return throughput, ""
    return None, "the heartbeat is stale: the flow is not processing" if not flow.ok else \
        "measured between two views of this page by this worker (the heartbeat holds one count): reload"


async def read(svc: Services, meter: ThroughputMeter) -> StreamStatus:
    """The live flow's state in two round trips; StoreUnavailable when Redis does not answer."""
    redis = svc.redis
    n = svc.settings.stream_partitions

    async def first():
        pipe = redis.pipeline(transaction=False)
        for p in range(n):
            pipe.hgetall(heartbeat_key(p))
            pipe.hgetall(counters_key(p))
            pipe.xlen(events_stream(p))
        pipe.xlen(DEAD_LETTER_STREAM)
        pipe.xrevrange(DEAD_LETTER_STREAM, count=DEAD_LETTERS_SHOWN)
        # TIME beside the pipeline, concurrently: a Redis Cluster pipeline refuses a command without a key
        return await asyncio.gather(redis.time(), pipe.execute())

    now_raw, replies = await svc.store.call(first)
    beats, counters_raw, lengths = replies[0:3 * n:3], replies[1:3 * n:3], replies[2:3 * n:3]
    dead_total, dead = replies[3 * n:]
    now_s = redis_time_s(now_raw)
    oldest, pending = await _pending(svc, beats)
    stale_after = svc.settings.live_max_age_s or STALE_HEARTBEAT_S
    partitions = assess_each(now_s, beats, oldest, stale_after)
    flow = worst(partitions)
    throughput, note = _throughput(meter, beats, flow)
    counters = merge_counters(counters_raw)
    max_t = counters.get("max_event_ts")
    waiting = None if any(count is None for count in pending) else sum(count or 0 for count in pending)
    return StreamStatus(
        flow, stale_after, sum(int(length) for length in lengths), waiting,
        any(count is not None and count >= PENDING_CAP for count in pending), throughput, note, counters,
        datetime.fromtimestamp(max_t, UTC).strftime("%Y-%m-%d %H:%M:%S") if max_t and max_t > 0 else None,
        int(dead_total), [dead_letter(i, f) for i, f in dead], partitions)
