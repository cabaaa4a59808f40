"""Where the flow's output goes: the Feast online store (Redis, Feast's layout) with the offline feature log, and
the control data (watermark, counters, dead letters).

The online sink writes what the shards emit (one row per changed entity per flush) with pipelined HSETs of
absolute values (never INCR: after a restart Bytewax replays some events, and rewriting the same absolute values
is harmless), and appends the rows to the feature log (streaming.feature_log).
"""

from __future__ import annotations

import time
from typing import NamedTuple

import msgspec
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from pantry.clock import from_epoch, publish_watermark
from pantry.featurestore import repo
from pantry.featurestore.layout import OnlineLayout
from pantry.featurestore.pipeline import chunked, pipeline_writer
from pantry.featurestore.resp import Row, RowEncoder
from pantry.keys import DEAD_LETTER_STREAM, STREAM_COUNTERS
from pantry.redis_server import sync_client
from pantry.settings import Settings
from streaming.feature_log import LOG_EVERY_S, FeatureLog
from streaming.features.event import NO_TIME
from streaming.features.store import STORE_PRODUCT_FEATURES

# Views whose rows the feature functions emit as tuples in this order (the most frequent rows: no dict is built);
# the encoder checks the names against the registry's schema of the view.
TUPLE_VIEWS = {"store_product": STORE_PRODUCT_FEATURES}


class Flush(NamedTuple):
    """What a shard emits at a flush: the rows of the entities that changed since its last flush, for the feature
    log, and the rows for the online store (the same list; or none while an unpaced replay defers them; or every
    row of the shard when the online store catches up after that)."""

    log: list[Row]
    online: list[Row]
    forgot: bool = False  # the shard dropped an erased customer (pantry.erasure): write the feature log now


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
            if any(flush.forgot for flush in items):  # the erased customer's earlier rows reach their files now,
                self.log.write()  # before the erasure rewrites the files (it waits for the flow to pass its marker)

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


class Control(msgspec.Struct, gc=False):
    """What the gate reports after each batch: absolute counters, the newest event time, rejected events."""

    counters: dict[str, int]
    max_t: float
    dead: list[tuple[str, bytes]]  # (reason, event as msgpack or the raw payload)


def dead_letter_fields(reason: str, payload: bytes, max_payload: int) -> dict[bytes, bytes]:
    """A dead letter: the reason whole, the payload cut to `max_payload` bytes (`size` then says how long it was)."""
    fields = {b"reason": reason.encode(), b"e": payload[:max_payload]}
    if len(payload) > max_payload:
        fields[b"size"] = str(len(payload)).encode()
    return fields


def trim_by_age(client, stream: str, retention_s: float, approximate: bool = True) -> int:
    """XTRIM MINID ~ now - retention (stream ids are the Redis server's milliseconds); returns entries removed."""
    seconds, micros = client.time()
    minid = int(seconds) * 1000 + int(micros) // 1000 - int(retention_s * 1000)
    return int(client.xtrim(stream, minid=f"{minid}-0", approximate=approximate)) if minid > 0 else 0


class ControlPartition(StatelessSinkPartition[Control]):
    """Counters, watermark and dead letters; the dead letters bounded by count (MAXLEN ~ at each XADD) and by age
    (MINID ~ every stream_trim_every_s), each payload cut to dead_letter_payload_bytes."""

    def __init__(self, settings: Settings):
        self.client = sync_client(settings, timeout_s=30.0)
        self.last_max_t = NO_TIME
        self.last_counters: dict[str, int] | None = None
        self.settings = settings
        self.last_trim = time.monotonic()

    def write_batch(self, items: list[Control]) -> None:
        settings = self.settings
        if time.monotonic() - self.last_trim >= settings.stream_trim_every_s:
            self.last_trim = time.monotonic()
            trim_by_age(self.client, DEAD_LETTER_STREAM, settings.dead_letter_retention_s)
        pipe = self.client.pipeline(transaction=False)
        for item in items:
            for reason, payload in item.dead:
                pipe.xadd(DEAD_LETTER_STREAM, dead_letter_fields(reason, payload, settings.dead_letter_payload_bytes),
                          maxlen=settings.dead_letter_maxlen, approximate=True)
        last = items[-1]
        if last.counters != self.last_counters:
            self.last_counters = dict(last.counters)
            mapping: dict[str, float] = dict(last.counters)
            if last.max_t > NO_TIME:
                mapping["max_event_ts"] = last.max_t
            pipe.hset(STREAM_COUNTERS, mapping=mapping)
        pipe.execute()
        if last.max_t > self.last_max_t:
            self.last_max_t = last.max_t
            publish_watermark(self.client, from_epoch(last.max_t))

    def close(self) -> None:
        self.client.close()


class ControlSink(DynamicSink[Control]):
    def __init__(self, settings: Settings):
        self.settings = settings

    def build(self, step_id: str, worker_index: int, worker_count: int) -> ControlPartition:
        return ControlPartition(self.settings)
