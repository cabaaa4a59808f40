"""Feast's Redis online-store layout, for writers and readers that skip the Feast SDK for speed.

One Redis hash per entity key: key = serialize_entity_key(entity) + project; fields are murmur3 of
`view:feature` (values are serialized `ValueProto`s) plus `_ts:<view>` (a serialized protobuf Timestamp).
Anything written here is readable by `FeatureStore.get_online_features` (a test proves it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import msgspec
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import (
    DoubleList,
    FloatList,
    Int64List,
    StringList,
)
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from google.protobuf.timestamp_pb2 import Timestamp

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class FeatureSchema(msgspec.Struct, frozen=True):
    name: str
    dtype: str  # Feast ValueType name: INT64, DOUBLE, FLOAT, STRING, BOOL, UNIX_TIMESTAMP, INT64_LIST, ...


class ViewSchema(msgspec.Struct, frozen=True):
    name: str
    join_keys: tuple[str, ...]
    ttl_s: float  # 0 = no TTL
    features: tuple[FeatureSchema, ...]

    def dtype(self, feature: str) -> str:
        for f in self.features:
            if f.name == feature:
                return f.dtype
        raise KeyError(f"feature view {self.name!r} has no feature {feature!r}")


# ---- entity keys -------------------------------------------------------------------------------------------


@lru_cache(maxsize=1_000_000)
def entity_key(project: str, join_keys: tuple[str, ...], values: tuple[int, ...]) -> bytes:
    """The Redis key of one entity (Int64 join keys), exactly as Feast builds it."""
    proto = EntityKeyProto(join_keys=list(join_keys))
    for v in values:
        proto.entity_values.add(int64_val=int(v))
    return serialize_entity_key(proto, entity_key_serialization_version=3) + project.encode()


@lru_cache(maxsize=4096)
def feature_field(view: str, feature: str) -> bytes:
    return _mmh3(f"{view}:{feature}")


def ts_field(view: str) -> bytes:
    return f"_ts:{view}".encode()


# ---- values ------------------------------------------------------------------------------------------------


def _ts_seconds(value: Any) -> int:
    if isinstance(value, datetime):
        return int(value.timestamp())
    return int(value)


def encode_value(dtype: str, value: Any) -> bytes:
    """A Python value as a serialized Feast ValueProto of the given type (None -> an empty Value)."""
    if value is None:
        return b""
    match dtype:
        case "INT64":
            proto = ValueProto(int64_val=int(value))
        case "INT32":
            proto = ValueProto(int32_val=int(value))
        case "DOUBLE":
            proto = ValueProto(double_val=float(value))
        case "FLOAT":
            proto = ValueProto(float_val=float(value))
        case "STRING":
            proto = ValueProto(string_val=str(value))
        case "BOOL":
            proto = ValueProto(bool_val=bool(value))
        case "UNIX_TIMESTAMP":
            proto = ValueProto(unix_timestamp_val=_ts_seconds(value))
        case "INT64_LIST":
            proto = ValueProto(int64_list_val=Int64List(val=[int(v) for v in value]))
        case "FLOAT_LIST":
            proto = ValueProto(float_list_val=FloatList(val=[float(v) for v in value]))
        case "DOUBLE_LIST":
            proto = ValueProto(double_list_val=DoubleList(val=[float(v) for v in value]))
        case "STRING_LIST":
            proto = ValueProto(string_list_val=StringList(val=[str(v) for v in value]))
        case _:
            raise ValueError(f"unsupported feature dtype {dtype}")
    return proto.SerializeToString()


def decode_value(raw: bytes | None) -> Any:
    """A serialized ValueProto back to a Python value (timestamps as aware datetimes, lists as lists)."""
    if not raw:
        return None
    proto = ValueProto()
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


def encode_ts(ts: datetime) -> bytes:
    proto = Timestamp()
    proto.FromDatetime(ts if ts.tzinfo else ts.replace(tzinfo=UTC))
    return proto.SerializeToString()


def decode_ts(raw: bytes | None) -> datetime | None:
    if not raw:
        return None
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
            hit = self._ts[raw] = decode_ts(raw)
            return hit


_DECODED = DecodedCache()


# ---- rows --------------------------------------------------------------------------------------------------


class OnlineLayout:
    """Encodes and decodes whole feature rows of the views of one Feast project."""

    def __init__(self, project: str, views: Mapping[str, ViewSchema]):
        self.project = project
        self.views = dict(views)

    def key(self, view: str, join_values: Sequence[int]) -> bytes:
        return entity_key(self.project, self.views[view].join_keys, tuple(int(v) for v in join_values))

    def encode_row(self, view: str, values: Mapping[str, Any], ts: datetime) -> dict[bytes, bytes]:
        """The HSET mapping of one row: every given feature plus the view's `_ts` field."""
        schema = self.views[view]
        mapping = {feature_field(view, name): encode_value(schema.dtype(name), v) for name, v in values.items()}
        mapping[ts_field(view)] = encode_ts(ts)
        return mapping

    def fields(self, view: str, features: Iterable[str] | None = None) -> list[bytes]:
        """The hash fields to HMGET for a view: the features asked for, then `_ts`."""
        schema = self.views[view]
        names = list(features) if features is not None else [f.name for f in schema.features]
        return [*(feature_field(view, n) for n in names), ts_field(view)]

    def decode_row(
        self, view: str, raw: Sequence[bytes | None], features: Sequence[str] | None = None
    ) -> tuple[dict[str, Any] | None, datetime | None]:
        """An HMGET reply (in `fields()` order) to ({feature: value}, event timestamp); (None, None) if absent."""
        names = list(features) if features is not None else [f.name for f in self.views[view].features]
        ts = _DECODED.ts(raw[-1])
        if ts is None and not any(raw[:-1]):
            return None, None
        value = _DECODED.value
        return {n: value(r) for n, r in zip(names, raw[:-1], strict=True)}, ts


def schemas_from_feast(feature_views: Iterable[Any]) -> dict[str, ViewSchema]:
    """ViewSchemas from Feast FeatureView objects (the registry is the source of truth for names and types)."""
    out: dict[str, ViewSchema] = {}
    for fv in feature_views:
        out[fv.name] = ViewSchema(
            name=fv.name,
            join_keys=tuple(col.name for col in fv.entity_columns),
            ttl_s=fv.ttl.total_seconds() if fv.ttl else 0.0,
            features=tuple(FeatureSchema(f.name, f.dtype.to_value_type().name) for f in fv.features),
        )
    return out
