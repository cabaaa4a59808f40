"""Where the flow's output goes: the Feast online store (Redis, Feast's layout) with the offline feature log, and
the control data (watermark, counters, dead letters).

The online sink writes what the shards emit (one row per changed entity per flush) with pipelined HSETs of
absolute values (never INCR: after a restart Bytewax replays some events, and rewriting the same absolute values
is harmless), and appends the rows to the feature log (streaming.feature_log). Both sinks ride out a Redis restart
or hang by retrying their writes (streaming.redis_retry) instead of ending the flow.
"""

from __future__ import annotations

import gc
import os
import socket
import time
from typing import NamedTuple

import msgspec
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from pantry.clock import from_epoch, publish_watermark
from pantry.featurestore import repo
from pantry.featurestore.layout import OnlineLayout
from pantry.featurestore.pipeline import chunked, pipeline_writer
from pantry.featurestore.resp import Row, RowEncoder
from pantry.health import HEARTBEAT_EVERY_S, HEARTBEAT_SCRIPT
from pantry.keys import DEAD_LETTER_STREAM, KPI_COUNTERS, KPI_PREFIX
from pantry.kpis import encode_counters, encode_counts
from pantry.partitions import counters_key, heartbeat_key
from pantry.redis_server import sync_client
from pantry.settings import Settings
from streaming.feature_log import LOG_EVERY_S, FeatureLog
from streaming.features.event import NO_TIME
from streaming.features.store_product import STORE_PRODUCT_FEATURES
from streaming.redis_retry import REDIS_DOWN, retried

# Views whose rows the feature functions emit as tuples in this order (the most frequent rows: no dict is built);
# the encoder checks the names against the registry's schema of the view.
TUPLE_VIEWS = {"store_product": STORE_PRODUCT_FEATURES}
REASON_MAX = 500  # characters of a dead letter's reason
Dead = tuple[str, bytes]  # a dead letter: (reason, event as msgpack or the raw payload)
_encode = msgspec.msgpack.Encoder().encode


def failure(exc: BaseException, event, where: str) -> Dead:
    """The dead letter of an event (or a row: event None) whose step raised: the exception's type and message,
    bounded."""
    reason = f"error in {where}: {type(exc).__name__}: {exc}"
    if len(reason) > REASON_MAX:
        reason = reason[:REASON_MAX - 3] + "..."
    try:
        payload = _encode(event) if event is not None else b""
    except Exception:  # an event msgpack cannot hold: keep its repr
        payload = repr(event)[:REASON_MAX].encode()
    return reason, payload


class Flush(NamedTuple):
    """What a shard emits at a flush: the rows of the entities that changed since its last flush, for the feature
    log, and the rows for the online store (the same list; or none while an unpaced replay defers them; or every
    row of the shard when the online store catches up after that); and the dead letters of events whose update
    raised (the other events of their batch are applied)."""

    log: list[Row]
    online: list[Row]
    dead: list[Dead] | tuple = ()
    forgot: bool = False  # the shard dropped an erased customer (pantry.erasure): write the feature log now


class OnlinePartition(StatelessSinkPartition[Flush]):
    """Writes each batch's rows. Live (`freeze_gc`), it first freezes the garbage collector's generations
    (`gc.freeze()`, O(1)): the state is millions of long-lived acyclic objects, and the young-generation collections
    that traversed what a batch left behind, then the older ones that traversed the state, paused the flow (~100 ms
    at 5,000 events/s, seconds as the heap grows: docs/DECISIONS.md "The live flow's garbage collector"). Every
    process has one, so each freezes its own heap at each batch."""

    def __init__(self, settings: Settings, worker: int, write_log: bool, layout: OnlineLayout | None = None,
                 log_handoff_s: float = LOG_EVERY_S, freeze_gc: bool = False):
        layout = layout or repo.layout(settings)
        self.encoder = RowEncoder(layout, TUPLE_VIEWS)
        self.settings = settings
        self.client = sync_client(settings, timeout_s=30.0)
        self.writer = pipeline_writer(self.client)  # one connection, or one per node of a Redis Cluster
        self.log = FeatureLog(settings.feature_log_dir, layout.views, worker, log_handoff_s,
                              TUPLE_VIEWS) if write_log else None
        self.rows_written = 0
        self.freeze_gc = freeze_gc

    def write_batch(self, items: list[Flush]) -> None:
        if self.freeze_gc:
            gc.freeze()
        # Rows are written in order: if one entity comes twice (two flushes of a shard in one batch), the newer
        # HSET lands last and wins, and the log keeps both (each was true as of its time).
        rows = [row for flush in items for row in flush.online]
        if rows:
            commands = self.encoder.commands
            try:  # a generator: the next chunk is encoded while Redis answers the last one
                self.writer.send_chunks(commands(chunk) for chunk in chunked(rows))
            except REDIS_DOWN:  # restarted or hung Redis (the writer reconnects): every row again, absolute HSETs
                chunks = [commands(chunk) for chunk in chunked(rows)]
                retried("online sink", lambda: self.writer.send_chunks(chunks))
            self.rows_written += len(rows)
        if self.log is not None:
            logged = [row for flush in items for row in flush.log]
            if logged:
                self.log.append(logged)
            if any(flush.forgot for flush in items):  # the erased customer's earlier rows reach their files now,
                self.log.write()  # before the erasure rewrites the files (it waits for the flow to pass its marker)
        dead = [d for flush in items for d in flush.dead]
        if dead:
            retried("dead letters", lambda: write_dead(self.client, dead, self.settings))

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
        self.writer.close()
        self.client.close()


class OnlineSink(DynamicSink[Flush]):
    def __init__(self, settings: Settings, write_log: bool = True, layout: OnlineLayout | None = None,
                 log_handoff_s: float = LOG_EVERY_S, freeze_gc: bool = False):
        self.settings, self.write_log, self.layout = settings, write_log, layout  # layout: None = from the registry
        self.log_handoff_s, self.freeze_gc = log_handoff_s, freeze_gc

    def build(self, step_id: str, worker_index: int, worker_count: int) -> OnlinePartition:
        return OnlinePartition(self.settings, worker_index, self.write_log, self.layout, self.log_handoff_s,
                               self.freeze_gc)


def dead_letter_fields(reason: str, payload: bytes, max_payload: int) -> dict[bytes, bytes]:
    """A dead letter: the reason whole, the payload cut to `max_payload` bytes (`size` then says how long it was)."""
    fields = {b"reason": reason.encode(errors="replace"), b"e": payload[:max_payload]}
    if len(payload) > max_payload:
        fields[b"size"] = str(len(payload)).encode()
    return fields


def trim_by_age(client, stream: str, retention_s: float, approximate: bool = True) -> int:
    """XTRIM MINID ~ now - retention (stream ids are the Redis server's milliseconds); returns entries removed."""
    seconds, micros = client.time()
    minid = int(seconds) * 1000 + int(micros) // 1000 - int(retention_s * 1000)
    return int(client.xtrim(stream, minid=f"{minid}-0", approximate=approximate)) if minid > 0 else 0


def add_dead(pipe, dead: list[Dead], settings: Settings) -> None:
    """XADD dead letters, bounded by count (MAXLEN ~) and each payload cut to dead_letter_payload_bytes."""
    for reason, payload in dead:
        pipe.xadd(DEAD_LETTER_STREAM, dead_letter_fields(reason, payload, settings.dead_letter_payload_bytes),
                  maxlen=settings.dead_letter_maxlen, approximate=True)


def write_dead(client, dead: list[Dead], settings: Settings) -> None:
    pipe = client.pipeline(transaction=False)
    add_dead(pipe, dead, settings)
    pipe.execute()


class Control(msgspec.Struct, gc=False):
    """What the gate reports after each batch: absolute counters, the newest event time, rejected events."""

    counters: dict[str, int]
    max_t: float
    dead: list[tuple[str, bytes]]  # (reason, event as msgpack or the raw payload)
    position: str | None = None  # live: the last stream entry id processed with this batch
    partition: int = 0  # the stream partition whose gate reports (pantry/partitions.py)


class ControlPartition(StatelessSinkPartition[Control]):
    """Counters, watermark, heartbeat and dead letters; the dead letters bounded by count (MAXLEN ~ at each XADD) and
    by age (MINID ~ every stream_trim_every_s), each payload cut to dead_letter_payload_bytes. Counters and heartbeat
    per stream partition (pantry.partitions.counters_key / heartbeat_key); the watermark only moves forward, so the
    gates of all partitions publish to the one key."""

    def __init__(self, settings: Settings, heartbeat: bool = False):
        self.settings = settings
        self.last_trim = time.monotonic()
        self.client = sync_client(settings, timeout_s=30.0)
        self.last_max_t = NO_TIME
        self.last_counters: dict[int, dict[str, int]] = {}  # by partition
        # live: the heartbeat (pantry.health) rides on this sink's pipeline at most once a second; the idle live
        # source sends a batch every 0.1 s, so a live flow that runs writes it every second
        self.heartbeat = heartbeat
        self.next_beat: dict[int, float] = {}
        self.position: dict[int, str] = {}
        self.whoami = (str(os.getpid()), socket.gethostname())

    def write_batch(self, items: list[Control]) -> None:
        settings = self.settings
        if time.monotonic() - self.last_trim >= settings.stream_trim_every_s:
            self.last_trim = time.monotonic()
            retried("dead letter trim",
                    lambda: trim_by_age(self.client, DEAD_LETTER_STREAM, settings.dead_letter_retention_s))
        last_of: dict[int, Control] = {}
        for item in items:
            last_of[item.partition] = item
        changed = [c for p, c in last_of.items() if c.counters != self.last_counters.get(p)]
        now = time.monotonic()
        beats: list[int] = []
        if self.heartbeat:
            for p, c in last_of.items():
                if c.position is not None:
                    self.position[p] = c.position
                if now >= self.next_beat.get(p, 0.0):
                    beats.append(p)

        def send() -> None:  # built again at each attempt: a failed execute() empties the pipeline
            pipe = self.client.pipeline(transaction=False)
            for item in items:
                add_dead(pipe, item.dead, settings)
            for c in changed:
                mapping: dict[str, float] = dict(c.counters)
                if c.max_t > NO_TIME:
                    mapping["max_event_ts"] = c.max_t
                pipe.hset(counters_key(c.partition), mapping=mapping)
            for p in beats:
                # as a raw command: redis-py's cluster pipeline has no eval(), and routes EVAL by its key
                pipe.execute_command("EVAL", HEARTBEAT_SCRIPT, 1, heartbeat_key(p), self.position.get(p, "0-0"),
                                     *self.whoami, last_of[p].counters.get("processed", 0))
            pipe.execute()

        retried("control sink", send)
        for c in changed:
            self.last_counters[c.partition] = dict(c.counters)
        for p in beats:
            self.next_beat[p] = now + HEARTBEAT_EVERY_S
        max_t = max(c.max_t for c in last_of.values())
        if max_t > self.last_max_t:
            retried("watermark", lambda: publish_watermark(self.client, from_epoch(max_t)))
            self.last_max_t = max_t

    def close(self) -> None:
        self.client.close()


class ControlSink(DynamicSink[Control]):
    def __init__(self, settings: Settings, heartbeat: bool = False):
        self.settings, self.heartbeat = settings, heartbeat

    def build(self, step_id: str, worker_index: int, worker_count: int) -> ControlPartition:
        return ControlPartition(self.settings, self.heartbeat)


class KpiPartition(StatelessSinkPartition):
    """The outcome shards' totals (streaming/outcomes.py): absolute HSETs (a flush replayed after a restart writes the
    same values), HDEL of the days past retention, the shards' counters; one pipeline per batch, retried."""

    def __init__(self, settings: Settings):
        self.client = sync_client(settings, timeout_s=30.0)

    def write_batch(self, items: list) -> None:  # [(shard, KpiFlush)]
        def send() -> None:  # built again at each attempt: a failed execute() empties the pipeline
            pipe = self.client.pipeline(transaction=False)
            for shard, flush in items:
                key = KPI_PREFIX + shard
                if flush.totals:
                    pipe.hset(key, mapping={f: encode_counts(c) for f, c in flush.totals.items()})
                if flush.deleted:
                    pipe.hdel(key, *flush.deleted)
                pipe.hset(KPI_COUNTERS, shard, encode_counters(flush.counters))
            pipe.execute()

        retried("kpi sink", send)

    def close(self) -> None:
        self.client.close()


class KpiSink(DynamicSink):
    def __init__(self, settings: Settings):
        self.settings = settings

    def build(self, step_id: str, worker_index: int, worker_count: int) -> KpiPartition:
        return KpiPartition(self.settings)
