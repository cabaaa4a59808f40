"""Where features go: the Feast online store (Redis, Feast's layout), the offline feature log, and control data.

The online sink coalesces rows per (view, entity) and flushes about every 100 ms with pipelined HSETs of
absolute values (never INCR: after a restart Bytewax replays some events, and rewriting the same absolute
values is harmless). Every flushed row is also appended to the offline log: parquet under
`<feature_log_dir>/<view>/<YYYY-MM-DD>/` (day of the row's event time), columns = join keys + features +
`event_timestamp`, which is the push sources' batch_source in feature_repo/sources.py.
The control sink publishes the watermark, absolute counters and dead letters.
"""

from __future__ import annotations

import os
import queue
import struct
import threading
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from functools import partial
from operator import itemgetter
from typing import Any, NamedTuple

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import redis
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from pantry.clock import from_epoch, publish_watermark
from pantry.keys import DEAD_LETTER_STREAM, STREAM_COUNTERS
from pantry.online import OnlineLayout, ViewSchema, encode_value, feature_field, ts_field
from pantry.settings import Settings
from streaming.features import NO_TIME, STORE_PRODUCT_FEATURES

# (view, join values, feature values, event time in epoch seconds). The values are a dict, or, for the views of
# TUPLE_VIEWS (the frequent rows), a tuple in that view's feature order there: no dict is built for them.
Row = tuple[str, tuple[int, ...], dict[str, Any] | tuple, float]
TUPLE_VIEWS = {"store_product": STORE_PRODUCT_FEATURES}


class Flush(NamedTuple):
    """What a shard emits at a flush: the rows of the entities that changed since its last flush, for the feature
    log, and the rows for the online store (the same list; or none while an unpaced replay defers them; or more
    when the online store catches up after that)."""

    log: list[Row]
    online: list[Row]

PIPELINE_CHUNK = 2000
LOG_EVERY_S = 5.0
LIVE_LOG_HANDOFF_S = 0.5  # see FeatureLog
LOG_MAX_PENDING = 20  # hand-offs waiting for the writer thread
LOG_MAX_ROWS = 200_000
DEAD_LETTER_MAXLEN = 100_000

_ARROW_TYPES = {
    "INT64": pa.int64(),
    "INT32": pa.int32(),
    "DOUBLE": pa.float64(),
    "FLOAT": pa.float32(),
    "STRING": pa.string(),
    "BOOL": pa.bool_(),
    "UNIX_TIMESTAMP": pa.timestamp("us", tz="UTC"),
    "INT64_LIST": pa.list_(pa.int64()),
    "FLOAT_LIST": pa.list_(pa.float32()),
    "DOUBLE_LIST": pa.list_(pa.float64()),
    "STRING_LIST": pa.list_(pa.string()),
}


def _varint(n: int) -> bytes:
    if 0x10000000 <= n < 0x800000000:  # 5 bytes: epoch seconds (2^28..2^35) and nanos, the common case
        return bytes(((n & 0x7F) | 0x80, ((n >> 7) & 0x7F) | 0x80, ((n >> 14) & 0x7F) | 0x80,
                      ((n >> 21) & 0x7F) | 0x80, n >> 28))
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_TS_CACHE: dict[float, bytes] = {}  # rows of one basket share their time: encode it once
_UNIX_CACHE: dict[float, bytes] = {}


def _ts_bytes(t: float) -> bytes:
    cached = _TS_CACHE.get(t)
    if cached is None:
        if len(_TS_CACHE) > 100_000:
            _TS_CACHE.clear()
        cached = _TS_CACHE[t] = _encode_ts(t)
    return cached


def _encode_ts(t: float) -> bytes:
    """A serialized google.protobuf.Timestamp (seconds = 1, nanos = 2), as Feast stores `_ts:<view>`."""
    seconds = int(t // 1)
    nanos = round((t - seconds) * 1e6) * 1000
    out = b"\x08" + _varint(seconds) if seconds else b""
    return out + (b"\x10" + _varint(nanos) if nanos else b"")


class EntityKeys:
    """Feast's serialized entity key (v3) for Int64 join keys, built by hand: the same bytes as
    feast.infra.key_encoding_utils.serialize_entity_key + project (a test checks), ~20x faster."""

    def __init__(self, project: str, join_keys: tuple[str, ...]):
        from feast.protos.feast.types.Value_pb2 import ValueType

        self.order = sorted(range(len(join_keys)), key=lambda i: join_keys[i])  # Feast sorts by key name
        header = [struct.pack("<I", len(join_keys))]
        for i in self.order:
            name = join_keys[i].encode()
            header += [struct.pack("<II", ValueType.STRING, len(name)), name]
        self.header = b"".join(header)
        self.int64 = ValueType.INT64
        self.project = project.encode()

        self.pack = struct.Struct("<" + "IIq" * len(join_keys)).pack  # (type, length, value) per key, in order

    def __call__(self, values: tuple[int, ...]) -> bytes:
        t = self.int64
        args = []
        for i in self.order:
            args += (t, 8, values[i])
        return self.header + self.pack(*args) + self.project

    def value_bytes(self, values: tuple[int, ...]) -> bytes:
        """The key without its header and project suffix (the part that depends on the values)."""
        t = self.int64
        args = []
        for i in self.order:
            args += (t, 8, values[i])
        return self.pack(*args)


_DOUBLE = struct.Struct("<d")
_FLOAT = struct.Struct("<f")
_SMALL_INT = {n: encode_value("INT64", n) for n in range(-1, 4096)}


def _int64(v) -> bytes:
    cached = _SMALL_INT.get(v)
    return cached if cached is not None else b"\x20" + _varint(int(v))  # field 4, varint


def _double(v) -> bytes:
    return b"\x29" + _DOUBLE.pack(v)  # field 5, fixed64


def _float(v) -> bytes:
    return b"\x35" + _FLOAT.pack(v)  # field 6, fixed32


def _unix_ts(v) -> bytes:
    cached = _UNIX_CACHE.get(v)
    if cached is None:
        if len(_UNIX_CACHE) > 100_000:
            _UNIX_CACHE.clear()
        cached = _UNIX_CACHE[v] = b"\x40" + _varint(int(v))  # field 8, varint (seconds)
    return cached


_FAST = {"INT64": _int64, "DOUBLE": _double, "FLOAT": _float, "UNIX_TIMESTAMP": _unix_ts}


# ---- RESP: a row straight to the bytes of one HSET command ----------------------------------------------------
# Per argument RESP is `$<len>\r\n<bytes>\r\n`. Field names are constants and the common values (small ints,
# timestamps, absent values) repeat, so their RESP forms are built once; a row then costs one join.


def _bulk(b: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(b), b)


_BULK_NONE = _bulk(b"")  # None: an empty ValueProto, as Feast writes a missing value
_BULK_HSET = _bulk(b"HSET")
_ARRAY_HEAD = [b"*%d\r\n" % n for n in range(256)]
_BULK_LEN = [b"$%d\r\n" % n for n in range(256)]
_RESP_SMALL_INT = {n: _bulk(v) for n, v in _SMALL_INT.items()}
_RESP_TS_CACHE: dict[float, bytes] = {}
_RESP_UNIX_CACHE: dict[float, bytes] = {}


def _resp_int64(v) -> bytes:
    cached = _RESP_SMALL_INT.get(v)
    return cached if cached is not None else _bulk(_int64(v))


def _resp_double(v) -> bytes:
    return b"$9\r\n\x29" + _DOUBLE.pack(v) + b"\r\n"


def _resp_float(v) -> bytes:
    return b"$5\r\n\x35" + _FLOAT.pack(v) + b"\r\n"


def _resp_unix_ts(v) -> bytes:
    cached = _RESP_UNIX_CACHE.get(v)
    if cached is None:
        if len(_RESP_UNIX_CACHE) > 100_000:
            _RESP_UNIX_CACHE.clear()
        cached = _RESP_UNIX_CACHE[v] = _bulk(_unix_ts(v))
    return cached


def _resp_ts(t: float) -> bytes:
    cached = _RESP_TS_CACHE.get(t)
    if cached is None:
        if len(_RESP_TS_CACHE) > 100_000:
            _RESP_TS_CACHE.clear()
        cached = _RESP_TS_CACHE[t] = _bulk(_encode_ts(t))
    return cached


_VARINTS: dict[int, bytes] = {}  # product ids repeat across rows: their varints are built once


def _packed_list(tag: bytes, payload: bytes) -> bytes:
    """A ValueProto list field: `tag` (field of Value, length-delimited) holding an XxxList whose repeated `val`
    (field 1) is packed; an empty list is an empty XxxList, as protobuf writes it."""
    inner = b"\x0a" + _varint(len(payload)) + payload if payload else b""
    return _bulk(tag + _varint(len(inner)) + inner)


def _resp_int64_list(v) -> bytes:
    try:
        payload = b"".join(map(_VARINTS.__getitem__, v))  # C speed when every id was seen before
    except KeyError:
        if len(_VARINTS) > 200_000:
            _VARINTS.clear()
        for n in v:
            if n not in _VARINTS:
                _VARINTS[n] = _varint(int(n))
        payload = b"".join(map(_VARINTS.__getitem__, v))
    return _packed_list(b"\x72", payload)  # int64_list_val = 14


def _resp_float_list(v) -> bytes:
    try:
        return _packed_list(b"\x82\x01", struct.pack(f"<{len(v)}f", *v))  # float_list_val = 16
    except OverflowError:  # beyond float32: protobuf's cast gives inf, struct refuses
        return _resp_slow("FLOAT_LIST", v)


def _resp_double_list(v) -> bytes:
    return _packed_list(b"\x7a", struct.pack(f"<{len(v)}d", *v))  # double_list_val = 15


_RESP_FAST = {"INT64": _resp_int64, "DOUBLE": _resp_double, "FLOAT": _resp_float, "UNIX_TIMESTAMP": _resp_unix_ts,
              "INT64_LIST": _resp_int64_list, "FLOAT_LIST": _resp_float_list, "DOUBLE_LIST": _resp_double_list}


def _resp_slow(dtype: str, v) -> bytes:
    return _bulk(encode_value(dtype, v))


_STORE_PRODUCT_DTYPES = ("INT64", "INT64", "UNIX_TIMESTAMP", "INT64", "FLOAT", "BOOL", "BOOL")


def _store_product_encoder(head: bytes, pack, int64: int, order: list[int], after_key: bytes, plan: list,
                           ts_name: bytes):
    """TupleCommand.generic unrolled for store_product's dtypes (the row of most replays: ~1.4 per event), as a
    closure over its constants: the same bytes, no loop, no attribute look-ups, and the constant runs between the
    values (the key's project suffix and the next field name; the float's prefix; the two promotion features,
    None from the stream, and the _ts field name) joined once, so a row is 13 parts instead of 21."""
    (f_u7, _), (f_u28, _), (f_last, _), (f_on_hand, _), (f_prob, _), (f_display, bool_), (f_mailer, _) = plan
    first, second = order
    after_key_u7 = after_key + f_u7
    prob_head = f_prob + b"$5\r\n\x35"  # FLOAT: field 6, fixed32
    tail_no_promotions = b"\r\n" + f_display + _BULK_NONE + f_mailer + _BULK_NONE + ts_name
    small = _RESP_SMALL_INT.get
    unix_cached = _RESP_UNIX_CACHE.get
    ts_cached = _RESP_TS_CACHE.get
    float_pack = _FLOAT.pack
    join = b"".join

    def store_product(join_values: tuple[int, ...], values: tuple, t: float) -> bytes:
        u7, u28, last_sold_at, on_hand, prob, on_display, in_mailer = values
        if on_display is None and in_mailer is None:
            tail = tail_no_promotions
        else:
            tail = b"".join((b"\r\n", f_display, _BULK_NONE if on_display is None else bool_(on_display), f_mailer,
                             _BULK_NONE if in_mailer is None else bool_(in_mailer), ts_name))
        return join((
            head, pack(int64, 8, join_values[first], int64, 8, join_values[second]), after_key_u7,
            small(u7) or _resp_int64(u7),
            f_u28, small(u28) or _resp_int64(u28),
            f_last, _BULK_NONE if last_sold_at is None else unix_cached(last_sold_at) or _resp_unix_ts(last_sold_at),
            f_on_hand, _BULK_NONE if on_hand is None else small(on_hand) or _resp_int64(on_hand),
            prob_head, float_pack(prob), tail,
            ts_cached(t) or _resp_ts(t),
        )) if prob is not None else join((
            head, pack(int64, 8, join_values[first], int64, 8, join_values[second]), after_key_u7,
            small(u7) or _resp_int64(u7),
            f_u28, small(u28) or _resp_int64(u28),
            f_last, _BULK_NONE if last_sold_at is None else unix_cached(last_sold_at) or _resp_unix_ts(last_sold_at),
            f_on_hand, _BULK_NONE if on_hand is None else small(on_hand) or _resp_int64(on_hand),
            f_prob, _BULK_NONE, tail[2:],
            ts_cached(t) or _resp_ts(t),
        ))

    return store_product


class TupleCommand:
    """`HSET` of a row whose values are a tuple with every feature of the view in a fixed order (TUPLE_VIEWS): the
    same bytes as RowEncoder.hset_command of the same values as a dict (a test checks), built with one struct pack
    for the entity key and one join, the argument count and the key's RESP length prefix being constants."""

    def __init__(self, view: ViewSchema, project: str, names: tuple[str, ...]):
        dtypes = {f.name: f.dtype for f in view.features}
        if set(dtypes) != set(names) or len(names) != len(dtypes):
            raise ValueError(f"{view.name}: the tuple order {names} does not name the view's features {tuple(dtypes)}")
        layout_order = tuple(f.name for f in view.features)
        # fields are written in the view's order, like hset_command does for a dict
        self.permutation = None if layout_order == names else [names.index(n) for n in layout_order]
        keys = EntityKeys(project, view.join_keys)
        key_len = len(keys.header) + 16 * len(view.join_keys) + len(keys.project)
        n_args = 2 + 2 * len(names) + 2  # HSET, key, (field, value) per feature, the _ts field and value
        self.head = b"*%d\r\n" % n_args + _BULK_HSET + b"$%d\r\n" % key_len + keys.header
        self.key_values = keys.value_bytes
        self.after_key = keys.project + b"\r\n"
        self.plan = [(_bulk(feature_field(view.name, name)), _RESP_FAST.get(dtypes[name]) or
                      partial(_resp_slow, dtypes[name])) for name in layout_order]
        self.ts_field = _bulk(ts_field(view.name))
        if len(view.join_keys) == 2:  # store x product: the key's value part in one pack call
            first, second = keys.order
            pack, t = keys.pack, keys.int64
            self.key_values = lambda v: pack(t, 8, v[first], t, 8, v[second])
        self.encode = self.generic
        if tuple(f.dtype for f in view.features) == _STORE_PRODUCT_DTYPES and self.permutation is None and \
                len(view.join_keys) == 2:
            self.store_product = _store_product_encoder(self.head, keys.pack, keys.int64, keys.order, self.after_key,
                                                        self.plan, self.ts_field)
            self.encode = self.store_product

    def __call__(self, join_values: tuple[int, ...], values: tuple, t: float) -> bytes:
        return self.encode(join_values, values, t)

    def generic(self, join_values: tuple[int, ...], values: tuple, t: float) -> bytes:
        if self.permutation is not None:
            values = tuple(values[i] for i in self.permutation)
        parts = [self.head, self.key_values(join_values), self.after_key]
        append = parts.append
        for (field, encode), v in zip(self.plan, values, strict=True):
            append(field)
            append(_BULK_NONE if v is None else encode(v))
        append(self.ts_field)
        append(_resp_ts(t))
        return b"".join(parts)


class RowEncoder:
    """Feast-layout HSET arguments for rows: per view, the field names and a value encoder are looked up once;
    scalar ValueProtos are built by hand (same bytes as protobuf, a test checks), lists by protobuf."""

    def __init__(self, layout: OnlineLayout):
        self.layout = layout
        self.plans = {
            name: ([(f.name, feature_field(name, f.name), _FAST.get(f.dtype) or partial(encode_value, f.dtype))
                    for f in view.features], ts_field(name))
            for name, view in layout.views.items()
        }
        self.keys = {name: EntityKeys(layout.project, view.join_keys) for name, view in layout.views.items()}
        # per view: entity key builder, [(feature, RESP of its field name, RESP value encoder)], RESP of _ts field
        self.resp_plans = {
            name: (self.keys[name],
                   [(f.name, _bulk(feature_field(name, f.name)),
                     _RESP_FAST.get(f.dtype) or partial(_resp_slow, f.dtype)) for f in view.features],
                   _bulk(ts_field(name)))
            for name, view in layout.views.items()
        }
        # views whose rows may come as tuples; a layout whose view lacks (or adds) features gets them as dicts
        self.tuple_commands = {name: TupleCommand(layout.views[name], layout.project, names)
                               for name, names in TUPLE_VIEWS.items()
                               if name in layout.views and {f.name for f in layout.views[name].features} == set(names)}

    def hset_command(self, view: str, join_values: tuple[int, ...], values: dict[str, Any] | tuple, t: float
                     ) -> bytes:
        """`HSET key field value ...` of one row as RESP: the bytes of resp_command([b"HSET", key, *hset_args])."""
        if values.__class__ is tuple:
            command = self.tuple_commands.get(view)
            if command is not None:
                return command(join_values, values, t)
            values = dict(zip(TUPLE_VIEWS[view], values, strict=True))
        keys, features, ts_name = self.resp_plans[view]
        key = keys(join_values)
        n = len(key)
        parts = [b"", _BULK_HSET, _BULK_LEN[n] if n < 256 else b"$%d\r\n" % n, key, b"\r\n"]
        append = parts.append
        for name, field, encode in features:
            v = values.get(name, _ABSENT)
            if v is not _ABSENT:
                append(field)
                append(_BULK_NONE if v is None else encode(v))
        append(ts_name)
        append(_resp_ts(t))
        n_args = len(parts) - 3  # HSET, key, then one part per argument
        parts[0] = _ARRAY_HEAD[n_args] if n_args < 256 else b"*%d\r\n" % n_args
        return b"".join(parts)

    def commands(self, rows: list[Row]) -> list[bytes]:
        """hset_command of each row; store_product tuple rows (most of a replay's) go straight to their unrolled
        encoder: one Python call per row instead of four."""
        hset = self.hset_command
        tuple_command = self.tuple_commands.get("store_product")
        if tuple_command is None:
            return [hset(*row) for row in rows]
        store_product = tuple_command.encode
        return [store_product(join_values, values, t)
                if view == "store_product" and values.__class__ is tuple else hset(view, join_values, values, t)
                for view, join_values, values, t in rows]

    def key(self, view: str, join_values: tuple[int, ...]) -> bytes:
        return self.keys[view](join_values)

    def hset_args(self, view: str, values: dict[str, Any] | tuple, t: float) -> list[bytes]:
        if values.__class__ is tuple:
            values = dict(zip(TUPLE_VIEWS[view], values, strict=True))
        features, ts_name = self.plans[view]
        out: list = []
        for name, field, encode in features:
            v = values.get(name, _ABSENT)
            if v is not _ABSENT:
                out += (field, b"" if v is None else encode(v))
        out += (ts_name, _ts_bytes(t))
        return out

    def mapping(self, view: str, values: dict[str, Any] | tuple, t: float) -> dict[bytes, bytes]:
        args = self.hset_args(view, values, t)
        return dict(zip(args[::2], args[1::2], strict=True))


_ABSENT = object()


def arrow_schema(view: ViewSchema) -> pa.Schema:
    fields = [pa.field(k, pa.int64()) for k in view.join_keys]
    fields += [pa.field(f.name, _ARROW_TYPES[f.dtype]) for f in view.features]
    fields.append(pa.field("event_timestamp", pa.timestamp("us", tz="UTC")))
    return pa.schema(fields)


class FeatureLog:
    """Buffers rows per view and hands them to a writer thread every `handoff_s`; the thread turns them into
    Arrow record batches at once and writes the batches as parquet files partitioned by event day every
    LOG_EVERY_S (and at close). The live flow hands off every LIVE_LOG_HANDOFF_S: rows held as Python objects for
    the whole LOG_EVERY_S were most of what the young-generation GC traversed (a repertoire row carries two lists
    of up to 60 values), and its pauses, 60-150 ms every ~1.5 s at 5,000 events/s, were the p99 of freshness. A
    replay (the GC is off) hands off every LOG_EVERY_S: fewer, bigger conversions. Building the batches holds the
    GIL but in 5 ms slices (the interpreter's switch interval), not one stall of the flow; parquet encoding and
    compression release it. A bounded queue: a slower disk slows the flow instead of growing memory."""

    def __init__(self, root, views: dict[str, ViewSchema], worker: int, handoff_s: float = LOG_EVERY_S):
        self.root = root
        self.handoff_s = handoff_s
        self.views = views
        self.schemas = {name: arrow_schema(view) for name, view in views.items()}
        self.worker = worker
        self.buffer: dict[str, list[Row]] = defaultdict(list)
        self.n = 0  # rows buffered
        self.n_handed = 0  # rows handed to the thread since its last write
        self.last_write = self.last_handoff = time.monotonic()
        # (rows by view, write the files after converting them?) or None: the end
        self.pending: queue.Queue[tuple[dict[str, list[Row]], bool] | None] = queue.Queue(maxsize=LOG_MAX_PENDING)
        self.error: BaseException | None = None
        self.made_dirs: set = set()
        self.thread = threading.Thread(target=self._run, name=f"feature-log-{worker}", daemon=True)
        self.thread.start()

    def append(self, rows: list[Row]) -> None:
        for row in rows:
            self.buffer[row[0]].append(row)
        self.n += len(rows)
        now = time.monotonic()
        if self.n + self.n_handed >= LOG_MAX_ROWS or now - self.last_write >= LOG_EVERY_S:
            self.write()
        elif now - self.last_handoff >= self.handoff_s:
            self._hand_off(write=False)

    def write(self) -> None:
        """Hand the buffered rows to the writer thread, which writes every row handed to it so far to files."""
        self.last_write = time.monotonic()
        self._hand_off(write=True)

    def _hand_off(self, write: bool) -> None:
        self._raise_error()
        self.last_handoff = time.monotonic()
        if self.n or (write and self.n_handed):
            self.pending.put((self.buffer, write))
            self.buffer = defaultdict(list)
            self.n_handed = 0 if write else self.n_handed + self.n
            self.n = 0

    def close(self) -> None:
        """Write what is buffered and wait until every file is on disk."""
        self.write()
        self.pending.put(None)
        self.thread.join()
        self._raise_error()

    def _raise_error(self) -> None:
        if self.error is not None:
            raise RuntimeError("the feature log writer failed") from self.error

    def _run(self) -> None:
        batches: dict[str, list[pa.RecordBatch]] = defaultdict(list)
        while (item := self.pending.get()) is not None:
            views, write = item
            try:
                for view, rows in views.items():
                    batches[view].append(self._record_batch(view, rows))
                del views, item  # the rows are garbage now, not at the next hand-off
                if write:
                    for view, view_batches in batches.items():
                        self._write_view(view, pa.Table.from_batches(view_batches, schema=self.schemas[view]))
                    batches = defaultdict(list)
            except BaseException as exc:  # reported to the flow at its next hand-off
                self.error = exc

    def _record_batch(self, view: str, rows: list[Row]) -> pa.RecordBatch:
        return pa.RecordBatch.from_pydict(_columns(self.views[view], rows), schema=self.schemas[view])

    def _write_view(self, view: str, table: pa.Table) -> None:
        micros = table.column("event_timestamp").cast(pa.int64()).to_numpy()
        days = np.floor_divide(micros, 86_400_000_000)
        stamp = f"{time.time_ns()}-{self.worker}-{uuid.uuid4().hex[:6]}"
        first, last = int(days.min()), int(days.max())
        if first == last:
            self._write_day(view, first, table, stamp)
            return
        # one stable sort by day, then a zero-copy slice per day (rows keep their order within a day)
        order = np.argsort(days, kind="stable")
        table, days = table.take(pa.array(order)), days[order]
        bounds = np.flatnonzero(np.diff(days)) + 1
        for start, end in zip([0, *bounds.tolist()], [*bounds.tolist(), len(days)], strict=True):
            self._write_day(view, int(days[start]), table.slice(start, end - start), stamp)

    def _write_day(self, view: str, day: int, table: pa.Table, stamp: str) -> None:
        out_dir = self.root / view / datetime.fromtimestamp(day * 86400, UTC).strftime("%Y-%m-%d")
        if out_dir not in self.made_dirs:  # a replay writes each day directory many times: one mkdir each
            out_dir.mkdir(parents=True, exist_ok=True)
            self.made_dirs.add(out_dir)
        tmp = out_dir / f".part-{stamp}.parquet.tmp"
        try:
            pq.write_table(table, tmp, **_PARQUET_OPTIONS)
        except FileNotFoundError:  # the directory went away since (a reset): make it again
            out_dir.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, tmp, **_PARQUET_OPTIONS)
        os.replace(tmp, out_dir / f"part-{stamp}.parquet")  # readers never see half a file


# A replay writes a file per view and event day and process (~3,800 for the full year): no dictionary pages (ids
# and times are mostly distinct within a file) and statistics only for event_timestamp (what point-in-time reads
# filter on): ~20 % less CPU per file than the defaults (1.1 vs 1.4 ms for 900 store_product rows, and 23 vs 28 KB).
_PARQUET_OPTIONS = {"compression": "zstd", "use_dictionary": False, "write_statistics": ["event_timestamp"]}


def _columns(schema: ViewSchema, rows: list[Row]) -> dict[str, Any]:
    """Rows of one view as columns (join keys, features: None where a row lacks one, event_timestamp). Transposed
    at C speed; times are converted with numpy / Arrow (the same truncation to microseconds as int(t * 1e6))."""
    joins = list(map(itemgetter(1), rows))
    values = list(map(itemgetter(2), rows))
    columns: dict[str, Any] = {k: list(map(itemgetter(i), joins)) for i, k in enumerate(schema.join_keys)}
    names = [f.name for f in schema.features]
    order = TUPLE_VIEWS.get(schema.name)
    if order is not None and set(map(type, values)) == {tuple}:
        position = {name: i for i, name in enumerate(order)}
        table = [list(map(itemgetter(position[name]), values)) if name in position else [None] * len(rows)
                 for name in names]
    else:
        if order is not None:
            values = [dict(zip(order, v, strict=True)) if v.__class__ is tuple else v for v in values]
        try:  # the feature functions return every feature: one C-speed pass per column
            table = [list(map(itemgetter(name), values)) for name in names]
        except KeyError:
            table = [[v.get(name) for v in values] for name in names]
    for f, col in zip(schema.features, table, strict=True):
        if f.dtype == "UNIX_TIMESTAMP":
            col = _micros_of_seconds(pa.array(col, pa.float64()))
        columns[f.name] = col
    seconds = np.fromiter(map(itemgetter(3), rows), dtype=np.float64, count=len(rows))
    columns["event_timestamp"] = _micros_of_seconds(pa.array(seconds))
    return columns


def _micros_of_seconds(seconds: pa.Array) -> pa.Array:
    """Epoch seconds (float, nulls kept) as UTC microsecond timestamps, truncated like int(t * 1e6)."""
    micros = pc.cast(pc.multiply(seconds, 1e6), pa.int64(), safe=False)
    return micros.cast(pa.timestamp("us", tz="UTC"))


def resp_command(args: list[bytes]) -> bytes:
    """One command in RESP, as redis-py's pack_command would send it (a test checks), minus its per-argument
    type dispatch: every argument here is already bytes."""
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        parts += (b"$%d\r\n" % len(a), a, b"\r\n")
    return b"".join(parts)


def send_pipelined(client, commands: list[bytes]) -> None:
    """Send pre-encoded RESP commands on one pooled connection and read every reply (an error reply raises)."""
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        conn.send_packed_command([b"".join(commands)], check_health=False)
        read = conn.read_response
        for _ in range(len(commands)):
            read()
    except BaseException:
        conn.disconnect()  # replies may be left unread: never hand this connection out again as is
        raise
    finally:
        pool.release(conn)


class PipelineWriter:
    """Sends pre-encoded RESP commands whose replies are one line each (HSET: `:n`, or an `-error`) on one dedicated
    redis-py connection (its AUTH/SELECT handshake), and reads the replies as raw bytes: counting lines and looking
    for an error is far cheaper than parsing thousands of integer replies one call each."""

    def __init__(self, client) -> None:
        self.conn = client.connection_pool.make_connection()

    def send(self, commands: list[bytes]) -> None:
        """Send the commands and wait for every reply (an error reply raises)."""
        self.send_chunks([commands])

    def send_chunks(self, chunks) -> None:
        """Send chunks of commands (an iterable: a generator encodes the next chunk while Redis answers the last
        one) and return once every command is answered; an error reply raises after all replies are read, so the
        connection stays usable. Only the replies of earlier chunks are waited for before a chunk is built:
        Redis's work on one chunk overlaps the encoding of the next, on the other core."""
        conn = self.conn
        if conn._sock is None:
            conn.connect()
        sock = conn._sock
        sent = answered = 0
        error: bytes | None = None
        try:
            for chunk in chunks:
                if not chunk:
                    continue
                previous = sent
                sock.sendall(b"".join(chunk))
                sent += len(chunk)
                answered, error = self._read(sock, previous, answered, error)
            answered, error = self._read(sock, sent, answered, error)
        except BaseException:
            conn.disconnect()  # replies may be left unread: reconnect next time
            raise
        if error is not None:
            raise redis.ResponseError(error.split(b"\r\n", 1)[0].decode(errors="replace"))

    @staticmethod
    def _read(sock, want: int, answered: int, error: bytes | None) -> tuple[int, bytes | None]:
        """Read replies until `want` are in. Each reply is one line (HSET: `:n`, or `-error`): counting newlines
        per received block is exact however the blocks split the lines; HSET's integers are >= 0, so a minus
        sign can only start an error reply."""
        while answered < want:
            block = sock.recv(65536)
            if not block:
                raise redis.ConnectionError("Redis closed the connection while replies were pending")
            answered += block.count(b"\n")
            if error is None and b"-" in block:
                error = block[block.index(b"-") + 1:]
            elif error is not None and b"\r\n" not in error:
                error += block
        return answered, error

    def close(self) -> None:
        self.conn.disconnect()


class OnlinePartition(StatelessSinkPartition[Flush]):
    """Writes what the shards emit (they coalesce per entity per flush) with pipelined HSETs of absolute values,
    and appends their changed rows to the feature log."""

    def __init__(self, settings: Settings, worker: int, write_log: bool, layout: OnlineLayout | None = None,
                 log_handoff_s: float = LOG_EVERY_S):
        from pantry import feast_repo
        from pantry.redis_server import sync_client

        layout = layout or feast_repo.layout(settings)
        self.encoder = RowEncoder(layout)
        self.client = sync_client(settings, timeout_s=30.0)
        from streaming.cluster_writer import pipeline_writer

        self.writer = pipeline_writer(self.client)  # one connection, or one per node of a Redis Cluster
        self.log = FeatureLog(settings.feature_log_dir, layout.views, worker, log_handoff_s) if write_log else None
        self.rows_written = 0

    def write_batch(self, items: list[Flush]) -> None:
        # Rows are written in order: if one entity comes twice (two flushes of a shard in one batch), the newer
        # HSET lands last and wins, and the log keeps both (each was true as of its time).
        rows = [row for flush in items for row in flush.online]
        if rows:
            commands = self.encoder.commands
            self.writer.send_chunks(commands(rows[i:i + PIPELINE_CHUNK]) for i in range(0, len(rows), PIPELINE_CHUNK))
            self.rows_written += len(rows)
        if self.log is not None:
            logged = [row for flush in items for row in flush.log]
            if logged:
                self.log.append(logged)

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


class ControlPartition(StatelessSinkPartition[Control]):
    def __init__(self, settings: Settings):
        from pantry.redis_server import sync_client

        self.client = sync_client(settings, timeout_s=30.0)
        self.last_max_t = NO_TIME
        self.last_counters: dict[str, int] | None = None

    def write_batch(self, items: list[Control]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for item in items:
            for reason, payload in item.dead:
                pipe.xadd(DEAD_LETTER_STREAM, {b"reason": reason.encode(), b"e": payload},
                          maxlen=DEAD_LETTER_MAXLEN, approximate=True)
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
