"""Where the flow's output goes: the Feast online store (Redis, Feast's layout) with the offline feature log, and
the control data (watermark, counters, dead letters).

The online sink writes what the shards emit (one row per changed entity per flush) with pipelined HSETs of
absolute values (never INCR: after a restart Bytewax replays some events, and rewriting the same absolute values
is harmless), and appends the rows to the feature log (streaming.feature_log).
"""

from __future__ import annotations

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
from pantry.keys import DEAD_LETTER_STREAM, LIVE_HEARTBEAT, STREAM_COUNTERS
from pantry.redis_server import sync_client
from pantry.settings import Settings
from streaming.feature_log import LOG_EVERY_S, FeatureLog
from streaming.features.event import NO_TIME
from streaming.features.store import STORE_PRODUCT_FEATURES

# Views whose rows the feature functions emit as tuples in this order (the most frequent rows: no dict is built);
# the encoder checks the names against the registry's schema of the view.
TUPLE_VIEWS = {"store_product": STORE_PRODUCT_FEATURES}
DEAD_LETTER_MAXLEN = 100_000
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


class OnlinePartition(StatelessSinkPartition[Flush]):
    def __init__(self, settings: Settings, worker: int, write_log: bool, layout: OnlineLayout | None = None,
                 log_handoff_s: float = LOG_EVERY_S):
        layout = layout or repo.layout(settings)
        self.encoder = RowEncoder(layout, TUPLE_VIEWS)
        self.client = sync_client(settings, timeout_s=30.0)
        self.writer = pipeline_writer(self.client)  # one connection, or one per node of a Redis Cluster
        self.log = FeatureLog(settings.feature_log_dir, layout.views, worker, log_handoff_s,
                              TUPLE_VIEWS) if write_log else None
        self.rows_written = 0

    def write_batch(self, items: list[Flush]) -> None:
        # Rows are written in order: if one entity comes twice (two flushes of a shard in one batch), the newer
        # HSET lands last and wins, and the log keeps both (each was true as of its time).
        rows = [row for flush in items for row in flush.online]
        if rows:
            commands = self.encoder.commands
            self.writer.send_chunks(commands(chunk) for chunk in chunked(rows))
            self.rows_written += len(rows)
        if self.log is not None:
            logged = [row for flush in items for row in flush.log]
            if logged:
                self.log.append(logged)
        dead = [d for flush in items for d in flush.dead]
        if dead:
            write_dead(self.client, dead)

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
        self.writer.close()
        self.client.close()


class OnlineSink(DynamicSink[Flush]):
    def __init__(self, settings: Settings, write_log: bool = True, layout: OnlineLayout | None = None,
                 log_handoff_s: float = LOG_EVERY_S):
        self.settings, self.write_log, self.layout = settings, write_log, layout  # layout: None = from the registry
        self.log_handoff_s = log_handoff_s

    def build(self, step_id: str, worker_index: int, worker_count: int) -> OnlinePartition:
        return OnlinePartition(self.settings, worker_index, self.write_log, self.layout, self.log_handoff_s)


def add_dead(pipe, dead: list[Dead]) -> None:
    for reason, payload in dead:
        pipe.xadd(DEAD_LETTER_STREAM, {b"reason": reason.encode(errors="replace"), b"e": payload},
                  maxlen=DEAD_LETTER_MAXLEN, approximate=True)


def write_dead(client, dead: list[Dead]) -> None:
    pipe = client.pipeline(transaction=False)
    add_dead(pipe, dead)
    pipe.execute()


class Control(msgspec.Struct, gc=False):
    """What the gate reports after each batch: absolute counters, the newest event time, rejected events."""

    counters: dict[str, int]
    max_t: float
    dead: list[tuple[str, bytes]]  # (reason, event as msgpack or the raw payload)
    position: str | None = None  # live: the last stream entry id processed with this batch


class ControlPartition(StatelessSinkPartition[Control]):
    def __init__(self, settings: Settings, heartbeat: bool = False):
        self.client = sync_client(settings, timeout_s=30.0)
        self.last_max_t = NO_TIME
        self.last_counters: dict[str, int] | None = None
        # live: the heartbeat (pantry.health) rides on this sink's pipeline at most once a second; the idle live
        # source sends a batch every 0.1 s, so a live flow that runs writes it every second
        self.heartbeat = heartbeat
        self.next_beat = 0.0
        self.position = "0-0"
        self.whoami = (str(os.getpid()), socket.gethostname())

    def write_batch(self, items: list[Control]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for item in items:
            add_dead(pipe, item.dead)
        last = items[-1]
        if last.counters != self.last_counters:
            self.last_counters = dict(last.counters)
            mapping: dict[str, float] = dict(last.counters)
            if last.max_t > NO_TIME:
                mapping["max_event_ts"] = last.max_t
            pipe.hset(STREAM_COUNTERS, mapping=mapping)
        if self.heartbeat:
            if last.position is not None:
                self.position = last.position
            now = time.monotonic()
            if now >= self.next_beat:
                self.next_beat = now + HEARTBEAT_EVERY_S
                pipe.eval(HEARTBEAT_SCRIPT, 1, LIVE_HEARTBEAT, self.position, *self.whoami,
                          last.counters.get("processed", 0))
        pipe.execute()
        if last.max_t > self.last_max_t:
            self.last_max_t = last.max_t
            publish_watermark(self.client, from_epoch(last.max_t))

    def close(self) -> None:
        self.client.close()


class ControlSink(DynamicSink[Control]):
    def __init__(self, settings: Settings, heartbeat: bool = False):
        self.settings, self.heartbeat = settings, heartbeat

    def build(self, step_id: str, worker_index: int, worker_count: int) -> ControlPartition:
        return ControlPartition(self.settings, self.heartbeat)
