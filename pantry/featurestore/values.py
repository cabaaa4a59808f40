"""Feast's value encodings: serialized `ValueProto`s (one per feature) and `google.protobuf.Timestamp`s (`_ts:<view>`).

Encoding is by hand for the scalar types pantry writes most (INT64, DOUBLE, FLOAT, UNIX_TIMESTAMP) and for event
timestamps: the same bytes protobuf writes (tests/pantry/featurestore checks them against Feast's own protobuf
classes), several times cheaper per value (docs/DECISIONS.md, "A hand-written Feast codec"). Every other type goes
through Feast's protobuf classes, and so does decoding, with a cache per process (`DecodedCache`). Those classes
are imported on first use: importing anything of `feast` imports the whole SDK (pandas included), which a process
that only encodes scalars or has not started yet should not pay for.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta
from functools import cache
from types import ModuleType
from typing import Any

from pantry.featurestore import feast_sdk

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@cache
def _value_pb2() -> ModuleType:
    feast_sdk.import_feast()
    from feast.protos.feast.types import Value_pb2

    return Value_pb2


# ---- varints and the hand-built scalars --------------------------------------------------------------------------


def varint(n: int) -> bytes:
    """Protobuf's base-128 varint (negative numbers as their 64-bit two's complement, as int64 fields do)."""
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


_DOUBLE = struct.Struct("<d")
FLOAT32 = struct.Struct("<f")
# ValueProto field tags: int64_val = 4 (varint), double_val = 5 (fixed64), float_val = 6 (fixed32),
# unix_timestamp_val = 8 (varint)
SMALL_INT = {n: b"\x20" + varint(n) for n in range(-1, 4096)}  # counts and flags repeat: built once


def int64_value(v) -> bytes:
    cached = SMALL_INT.get(v)
    return cached if cached is not None else b"\x20" + varint(int(v))


def double_value(v) -> bytes:
    return b"\x29" + _DOUBLE.pack(v)


def float_value(v) -> bytes:
    try:
        return b"\x35" + FLOAT32.pack(v)
    except OverflowError:  # beyond float32: protobuf's cast gives inf, struct refuses
        return _value_pb2().Value(float_val=float(v)).SerializeToString()


def unix_timestamp_value(v) -> bytes:
    """UNIX_TIMESTAMP: whole epoch seconds (a datetime or a number)."""
    return b"\x40" + varint(int(v.timestamp()) if isinstance(v, datetime) else int(v))


FAST_SCALARS = {"INT64": int64_value, "DOUBLE": double_value, "FLOAT": float_value,
                "UNIX_TIMESTAMP": unix_timestamp_value}


def timestamp(t: float | datetime) -> bytes:
    """A serialized google.protobuf.Timestamp (seconds = 1, nanos = 2), as Feast stores `_ts:<view>`: of epoch
    seconds (rounded to microseconds), or of a datetime (naive = UTC)."""
    if isinstance(t, datetime):
        seconds = (t if t.tzinfo else t.replace(tzinfo=UTC)) - EPOCH
        seconds, nanos = seconds.days * 86_400 + seconds.seconds, seconds.microseconds * 1000
    else:
        seconds = int(t // 1)
        nanos = round((t - seconds) * 1e6) * 1000
    out = b"\x08" + varint(seconds) if seconds else b""
    return out + (b"\x10" + varint(nanos) if nanos else b"")


# ---- the generic path ----------------------------------------------------------------------------------------------


def encode_value(dtype: str, value: Any) -> bytes:
    """A Python value as a serialized Feast ValueProto of the given Feast value type (None -> an empty Value)."""
    if value is None:
        return b""
    fast = FAST_SCALARS.get(dtype)
    if fast is not None:
        return fast(value)
    pb = _value_pb2()
    match dtype:
        case "INT32":
            proto = pb.Value(int32_val=int(value))
        case "STRING":
            proto = pb.Value(string_val=str(value))
        case "BOOL":
            proto = pb.Value(bool_val=bool(value))
        case "INT64_LIST":
            proto = pb.Value(int64_list_val=pb.Int64List(val=[int(v) for v in value]))
        case "FLOAT_LIST":
            proto = pb.Value(float_list_val=pb.FloatList(val=[float(v) for v in value]))
        case "DOUBLE_LIST":
            proto = pb.Value(double_list_val=pb.DoubleList(val=[float(v) for v in value]))
        case "STRING_LIST":
            proto = pb.Value(string_list_val=pb.StringList(val=[str(v) for v in value]))
        case _:
            raise ValueError(f"unsupported feature dtype {dtype}")
    return proto.SerializeToString()


def decode_value(raw: bytes | None) -> Any:
    """A serialized ValueProto back to a Python value (timestamps as aware datetimes, lists as lists)."""
    if not raw:
        return None
    proto = _value_pb2().Value()
    proto.ParseFromString(raw)
    kind = proto.WhichOneof("val")
    if kind is None or kind == "null_val":
        return None
    value = getattr(proto, kind)
    if kind == "unix_timestamp_val":
        return EPOCH + timedelta(seconds=value)
    if kind.endswith("_list_val"):
        return list(value.val)
    return value


def decode_timestamp(raw: bytes | None) -> datetime | None:
    if not raw:
        return None
    from google.protobuf.timestamp_pb2 import Timestamp

    proto = Timestamp()
    proto.ParseFromString(raw)
    return EPOCH + timedelta(seconds=proto.seconds, microseconds=proto.nanos // 1000)


class DecodedCache:
    """Decoded values by their serialized bytes: a read decodes each distinct value once per process, not per row.

    Online values repeat (counts, flags, store ids, rounded rates, a row read again and again): one protobuf parse
    per value was ~7% of a `/v1/features` request's CPU. Values are immutable (lists are kept as tuples and
    handed out as fresh lists), so sharing them is safe. Bounded: emptied when full, so memory stays flat."""

    def __init__(self, max_entries: int = 100_000):
        self.max_entries = max_entries
        self._values: dict[bytes, Any] = {}
        self._ts: dict[bytes, datetime | None] = {}

    def value(self, raw: bytes | None) -> Any:
        if not raw:
            return None
        try:
            hit = self._values[raw]
        except KeyError:
            hit = decode_value(raw)
            if hit.__class__ is list:
                hit = tuple(hit)
            if len(self._values) >= self.max_entries:
                self._values.clear()
            self._values[raw] = hit
        return list(hit) if hit.__class__ is tuple else hit

    def ts(self, raw: bytes | None) -> datetime | None:
        if not raw:
            return None
        try:
            return self._ts[raw]
        except KeyError:
            if len(self._ts) >= self.max_entries:
                self._ts.clear()
            hit = self._ts[raw] = decode_timestamp(raw)
            return hit
