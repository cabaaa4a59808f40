"""Feature rows as RESP `HSET` commands in Feast's layout, ready to pipeline (pantry.featurestore.pipeline).

A row is (view, join values, values, event time as epoch seconds); its values are a dict (any subset of the
view's features) or, for the views given `tuple_orders`, a tuple with every feature in that order (the frequent
rows of the stream: no dict is built for them). Per argument RESP is `$<len>\r\n<bytes>\r\n`: field names are
constants and the common values (small ints, timestamps) repeat, so their RESP forms are built once, and lists of
ids are serialized by protobuf's C runtime and a row costs one join (docs/DECISIONS.md, "A hand-written Feast codec").
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pantry.featurestore.layout import EntityKeys, OnlineLayout, ViewSchema, feature_field, ts_field
from pantry.featurestore.values import (
    FLOAT32,
    SMALL_INT,
    encode_value,
    int64_value,
    timestamp,
    unix_timestamp_value,
    varint,
)

# (view, join values, feature values, event time in epoch seconds; a datetime is accepted too)
Row = tuple[str, tuple[int, ...], dict[str, Any] | tuple, float]
_CACHE_MAX = 100_000  # per cache of encoded values; emptied when full


def bulk(b: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(b), b)


def resp_command(args: Sequence[bytes]) -> bytes:
    """One command in RESP, as redis-py's pack_command sends it (a test checks), every argument already bytes."""
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        parts += (b"$%d\r\n" % len(a), a, b"\r\n")
    return b"".join(parts)


_NONE = bulk(b"")  # None: an empty ValueProto, as Feast writes a missing value
_HSET = bulk(b"HSET")
_SMALL_INT = {n: bulk(v) for n, v in SMALL_INT.items()}


class _Memo(dict):
    """RESP forms of values that repeat (timestamps of a basket's rows, sale times), bounded."""

    def __init__(self, encode):
        super().__init__()
        self.encode = encode

    def __missing__(self, v):
        if len(self) >= _CACHE_MAX:
            self.clear()
        out = self[v] = bulk(self.encode(v))
        return out


_TS = _Memo(timestamp)
_UNIX_TS = _Memo(unix_timestamp_value)


def _int64_list_class() -> type:
    """A protobuf message with one packed `repeated int64 val = 1`: Feast's Int64List on the wire, serialized by
    protobuf's C runtime (upb) without importing Feast. Encoding a list in C is twice as fast as joining cached
    varints in Python, and far more so once the cache's entries are spread over a big heap (docs/DECISIONS.md
    "Compact tops")."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    proto = descriptor_pb2.FileDescriptorProto(name="pantry/int64_list.proto", package="pantry", syntax="proto3")
    message = proto.message_type.add(name="Int64List")
    message.field.add(name="val", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
                      label=descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("pantry.Int64List"))


_Int64List = _int64_list_class()


def _int64(v) -> bytes:
    cached = _SMALL_INT.get(v)
    return cached if cached is not None else bulk(int64_value(v))


def _double(v) -> bytes:
    return b"$9\r\n\x29" + struct.pack("<d", v) + b"\r\n"


def _float(v) -> bytes:
    try:
        return b"$5\r\n\x35" + FLOAT32.pack(v) + b"\r\n"
    except OverflowError:  # beyond float32: protobuf's cast gives inf, struct refuses
        return bulk(encode_value("FLOAT", v))


def _packed_list(tag: bytes, payload: bytes) -> bytes:
    """A ValueProto list field: `tag` (field of Value, length-delimited) holding an XxxList whose repeated `val`
    (field 1) is packed; an empty list is an empty XxxList, as protobuf writes it."""
    inner = b"\x0a" + varint(len(payload)) + payload if payload else b""
    return bulk(tag + varint(len(inner)) + inner)


def _int64_list(v) -> bytes:
    try:
        inner = _Int64List(val=v).SerializeToString()  # int64_list_val = 14, its packed `val` as protobuf writes it
    except TypeError:  # values that are not ints but convert (1.0, a float column's ids)
        inner = _Int64List(val=[int(x) for x in v]).SerializeToString()
    return bulk(b"\x72" + varint(len(inner)) + inner)


def _float_list(v) -> bytes:
    try:
        return _packed_list(b"\x82\x01", struct.pack(f"<{len(v)}f", *v))  # float_list_val = 16
    except OverflowError:
        return bulk(encode_value("FLOAT_LIST", v))


def _double_list(v) -> bytes:
    return _packed_list(b"\x7a", struct.pack(f"<{len(v)}d", *v))  # double_list_val = 15


_ENCODERS = {"INT64": _int64, "DOUBLE": _double, "FLOAT": _float, "UNIX_TIMESTAMP": _UNIX_TS.__getitem__,
             "INT64_LIST": _int64_list, "FLOAT_LIST": _float_list, "DOUBLE_LIST": _double_list}


def value_encoder(dtype: str):
    """The RESP bulk string of a value of this Feast type (not None)."""
    return _ENCODERS.get(dtype) or (lambda v: bulk(encode_value(dtype, v)))


class _ViewCommands:
    """HSET commands of one view's rows: the key's constant parts, each feature's field name and encoder."""

    def __init__(self, view: ViewSchema, project: str, tuple_order: Sequence[str] | None):
        keys = EntityKeys(project, view.join_keys)
        self.keys = keys
        self.key_head = _HSET + b"$%d\r\n" % keys.length + keys.header
        self.key_tail = keys.project + b"\r\n"
        self.plan = [(f.name, bulk(feature_field(view.name, f.name)), value_encoder(f.dtype)) for f in view.features]
        self.ts_field = bulk(ts_field(view.name))
        if tuple_order is not None:
            names = view.feature_names
            if sorted(tuple_order) != sorted(names):
                raise ValueError(f"{view.name}: the stream's tuple order {tuple(tuple_order)} does not name the "
                                 f"view's features {names} (feature_repo/ and the feature functions disagree)")
            # fields are written in the view's order, as for a dict
            self.tuple_plan = [(field, encode, list(tuple_order).index(name)) for name, field, encode in self.plan]
            self.tuple_head = b"*%d\r\n" % (2 + 2 * len(names) + 2) + self.key_head

    def from_tuple(self, join_values: Sequence[int], values: tuple, t: float) -> bytes:
        parts = [self.tuple_head, self.keys.value_bytes(join_values), self.key_tail]
        append = parts.append
        for field, encode, i in self.tuple_plan:
            v = values[i]
            append(field)
            append(_NONE if v is None else encode(v))
        append(self.ts_field)
        append(_TS[t])
        return b"".join(parts)

    def from_dict(self, join_values: Sequence[int], values: Mapping[str, Any], t: float | datetime) -> bytes:
        parts = [b"", self.key_head, self.keys.value_bytes(join_values), self.key_tail]
        append = parts.append
        for name, field, encode in self.plan:
            if name in values:
                v = values[name]
                append(field)
                append(_NONE if v is None else encode(v))
        append(self.ts_field)
        append(_TS[t])
        parts[0] = b"*%d\r\n" % (len(parts) - 2)  # HSET and key, then one part per argument
        return b"".join(parts)


class RowEncoder:
    """`HSET key field value ...` of feature rows as RESP, for every view of a layout.

    `tuple_orders`: {view: feature names} for views whose rows may come as tuples in that order; the names must be
    the view's features (checked here against the registry's schema)."""

    def __init__(self, layout: OnlineLayout, tuple_orders: Mapping[str, Sequence[str]] | None = None):
        orders = tuple_orders or {}
        self.views = {name: _ViewCommands(view, layout.project, orders.get(name))
                      for name, view in layout.views.items()}

    def hset_command(self, view: str, join_values: Sequence[int], values: Mapping[str, Any] | tuple,
                     t: float | datetime) -> bytes:
        commands = self.views[view]
        if values.__class__ is tuple:
            return commands.from_tuple(join_values, values, t)
        return commands.from_dict(join_values, values, t)

    def commands(self, rows: Sequence[Row]) -> list[bytes]:
        hset = self.hset_command
        return [hset(view, join_values, values, t) for view, join_values, values, t in rows]

    def key(self, view: str, join_values: Sequence[int]) -> bytes:
        return self.views[view].keys(join_values)
