"""The live flow as an ML engineer watches it: how far behind it is, how fast it goes, what it counted and the latest
events it rejected with their reasons. Everything from what the flow itself writes (streaming/sinks.py): the heartbeat
hash (Redis time, last entry id, processed), the counters hash, the dead-letter stream; in two pipelined round trips.

Lag is two figures: the heartbeat's age and the age of the oldest pending entry of pantry:events (both judged by
pantry.health.assess, as /readyz does), plus how many entries are pending (counted in Redis, capped).

Throughput needs two readings of the heartbeat's `processed` and `ts` (written once a second, in Redis time). The
flow keeps no history, so each worker keeps its own last readings (`ThroughputMeter`, in memory): the first view
after a start shows "n/a", later ones the rate since the newest earlier reading at least MIN_WINDOW_S older.
"""

from __future__ import annotations

import asyncio
from collections import deque
from datetime import UTC, datetime
from typing import Final

import msgspec

from pantry.health import HEARTBEAT_EVERY_S, LiveFlow, assess, pending_range, redis_time_s
from pantry.keys import DEAD_LETTER_STREAM, EVENTS_STREAM, LIVE_HEARTBEAT, STREAM_COUNTERS
from serving.services import Services

DEAD_LETTERS_SHOWN: Final = 20
PAYLOAD_SHOWN: Final = 240  # characters of a dead letter's payload on the page
PENDING_CAP: Final = 10_000  # entries counted after the heartbeat's last_id (more: "at least")
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
    """One worker's recent heartbeat readings, newest last."""

    def __init__(self) -> None:
        self.readings: deque[Reading] = deque(maxlen=256)

    def observe(self, reading: Reading) -> Throughput | None:
        """Record a reading; the processed rate since the newest earlier reading of the same flow process at least
        MIN_WINDOW_S older (None: no such reading yet, or the counter went back: a flow restarted from a snapshot)."""
        if not self.readings or reading.ts > self.readings[-1].ts:
            self.readings.append(reading)
        while self.readings and self.readings[0].ts < reading.ts - KEEP_READINGS_S:
            self.readings.popleft()
        for earlier in reversed(self.readings):
            span = reading.ts - earlier.ts
            if span >= MIN_WINDOW_S and earlier.pid == reading.pid:
                if reading.processed < earlier.processed:
                    return None
                return Throughput((reading.processed - earlier.processed) / span, span)
        return None


class DeadLetter(msgspec.Struct, frozen=True):
    entry_id: str
    at: str  # UTC, from the entry id (Redis time of the XADD)
    reason: str
    payload: str  # decoded and cut to PAYLOAD_SHOWN characters
    size: int | None  # the payload's original size when the flow cut it (dead_letter_payload_bytes)


class StreamStatus(msgspec.Struct):
    flow: LiveFlow
    stale_after_s: float
    stream_length: int
    pending: int | None  # entries after the heartbeat's last_id (None: no heartbeat)
    pending_capped: bool
    throughput: Throughput | None
    throughput_note: str  # why there is no throughput (empty when there is one)
    counters: dict[str, float]  # every counter of pantry:stream:counters
    max_event_at: str | None  # the newest event time the gate accepted (the flow's watermark source)
    dead_total: int
    dead_letters: list[DeadLetter]

    @property
    def other_counters(self) -> dict[str, float]:
        return {k: v for k, v in sorted(self.counters.items()) if k not in MAIN_COUNTERS and k != "max_event_ts"}


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _number(raw: bytes | str) -> float:
    try:
        return float(_text(raw))
    except ValueError:
        return float("nan")


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


async def read(svc: Services, meter: ThroughputMeter) -> StreamStatus:
    """The live flow's state in two round trips; StoreUnavailable when Redis does not answer."""
    redis = svc.redis

    async def first():
        pipe = redis.pipeline(transaction=False)
        pipe.hgetall(LIVE_HEARTBEAT)
        pipe.hgetall(STREAM_COUNTERS)
        pipe.xlen(EVENTS_STREAM)
        pipe.xlen(DEAD_LETTER_STREAM)
        pipe.xrevrange(DEAD_LETTER_STREAM, count=DEAD_LETTERS_SHOWN)
        # TIME beside the pipeline, concurrently: a Redis Cluster pipeline refuses a command without a key
        return await asyncio.gather(redis.time(), pipe.execute())

    now_raw, (beat, counters_raw, stream_length, dead_total, dead) = await svc.store.call(first)
    now_s = redis_time_s(now_raw)
    oldest, pending = None, None
    if beat:
        start, _ = pending_range(beat)

        async def second():
            pipe = redis.pipeline(transaction=False)
            pipe.xrange(EVENTS_STREAM, start, "+", count=1)
            pipe.eval(_COUNT_PENDING, 1, EVENTS_STREAM, start, PENDING_CAP)
            return await pipe.execute()

        first_pending, pending = await svc.store.call(second)
        oldest = first_pending[0][0] if first_pending else None
    stale_after = svc.settings.live_max_age_s or STALE_HEARTBEAT_S
    flow = assess(now_s, beat, oldest, stale_after)
    throughput, note = None, ""
    fields = {_text(k): _text(v) for k, v in beat.items()}
    try:
        reading = Reading(float(fields["ts"]), int(float(fields.get("processed", "0"))), fields.get("pid", ""))
    except (KeyError, ValueError):
        note = "no heartbeat"
    else:
        throughput = meter.observe(reading)
        if throughput is None:
            note = "the heartbeat is stale: the flow is not processing" if not flow.ok else \
                "measured between two views of this page by this worker (the heartbeat holds one count): reload"
    counters = {_text(k): _number(v) for k, v in counters_raw.items()}
    max_t = counters.get("max_event_ts")
    return StreamStatus(
        flow, stale_after, int(stream_length), None if pending is None else int(pending),
        pending is not None and int(pending) >= PENDING_CAP, throughput, note, counters,
        datetime.fromtimestamp(max_t, UTC).strftime("%Y-%m-%d %H:%M:%S") if max_t and max_t > 0 else None,
        int(dead_total), [dead_letter(i, f) for i, f in dead])
