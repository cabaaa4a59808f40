"""Feast's Redis online-store layout: which hash holds a row and which fields hold its values.

One Redis hash per entity key: key = Feast's serialized entity key (v3) + project; fields are murmur3 of
`view:feature` (values: serialized `ValueProto`s, pantry.featurestore.values) plus `_ts:<view>` (a serialized
protobuf Timestamp). The views' names, join keys, TTLs and types are read from the Feast registry
(`schemas_from_feast`): feature_repo/ states them once.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

import mmh3
import msgspec

from pantry.featurestore.values import DecodedCache

_STRING, _INT64 = 2, 4  # feast.protos.feast.types.Value_pb2.ValueType numbers


class FeatureSchema(msgspec.Struct, frozen=True):
    name: str
    dtype: str  # Feast ValueType name: INT64, DOUBLE, FLOAT, STRING, BOOL, UNIX_TIMESTAMP, INT64_LIST, ...


class ViewSchema(msgspec.Struct, frozen=True):
    name: str
    join_keys: tuple[str, ...]
    ttl_s: float  # 0 = no TTL
    features: tuple[FeatureSchema, ...]
    push_source: str | None = None  # the Feast PushSource feeding the view (the stream's and `/push`'s way in)

    def dtype(self, feature: str) -> str:
        for f in self.features:
            if f.name == feature:
                return f.dtype
        raise KeyError(f"feature view {self.name!r} has no feature {feature!r}")

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)


def schemas_from_feast(feature_views: Iterable[Any]) -> dict[str, ViewSchema]:
    """ViewSchemas from Feast FeatureView objects (the registry is the source of truth for names and types)."""
    out: dict[str, ViewSchema] = {}
    for fv in feature_views:
        out[fv.name] = ViewSchema(
            name=fv.name,
            join_keys=tuple(col.name for col in fv.entity_columns),
            ttl_s=fv.ttl.total_seconds() if fv.ttl else 0.0,
            features=tuple(FeatureSchema(f.name, f.dtype.to_value_type().name) for f in fv.features),
            push_source=getattr(fv.stream_source, "name", None),
        )
    return out


class EntityKeys:
    """Feast's serialized entity key (v3) + project for Int64 join keys, built with `struct`: the same bytes as
    feast.infra.key_encoding_utils.serialize_entity_key (a test checks), ~20x cheaper than its protobuf path,
    which was ~25% of a substitution request's CPU. Layout: the number of keys, each join key name (sorted) as
    STRING, each value in that order as INT64 (type, length 8, value), then the project."""

    def __init__(self, project: str, join_keys: Sequence[str]):
        self.order = sorted(range(len(join_keys)), key=lambda i: join_keys[i])  # Feast sorts by key name
        header = [struct.pack("<I", len(join_keys))]
        for i in self.order:
            name = join_keys[i].encode()
            header += [struct.pack("<II", _STRING, len(name)), name]
        self.header = b"".join(header)
        self.project = project.encode()
        pack = struct.Struct("<" + "IIq" * len(join_keys)).pack  # (type, length, value) per key, in order
        if len(self.order) == 1:
            self.value_bytes = lambda values: pack(_INT64, 8, values[0])
        elif len(self.order) == 2:  # store x product: one call, no argument list built per key
            first, second = self.order
            self.value_bytes = lambda values: pack(_INT64, 8, values[first], _INT64, 8, values[second])
        else:
            self.value_bytes = lambda values: pack(*(x for i in self.order for x in (_INT64, 8, values[i])))

    def value_bytes(self, values: Sequence[int]) -> bytes:  # replaced per instance in __init__
        """The part of the key that depends on the values (between the header and the project)."""
        raise NotImplementedError

    def __call__(self, values: Sequence[int]) -> bytes:
        return self.header + self.value_bytes(values) + self.project

    @property
    def length(self) -> int:
        return len(self.header) + 16 * len(self.order) + len(self.project)


@lru_cache(maxsize=4096)
def feature_field(view: str, feature: str) -> bytes:
    """Feast's field name of a feature: murmur3 (32-bit, unsigned) of `view:feature`, 4 bytes little-endian."""
    return struct.pack("<I", mmh3.hash(f"{view}:{feature}", signed=False))


def ts_field(view: str) -> bytes:
    return f"_ts:{view}".encode()


_DECODED = DecodedCache()


class OnlineLayout:
    """The views of one Feast project: the Redis key and fields of a row, and a row decoded from an HMGET reply."""

    def __init__(self, project: str, views: Mapping[str, ViewSchema]):
        self.project = project
        self.views = dict(views)
        self.keys = {name: EntityKeys(project, view.join_keys) for name, view in self.views.items()}

    def key(self, view: str, join_values: Sequence[int]) -> bytes:
        return self.keys[view](join_values)

    def fields(self, view: str, features: Iterable[str] | None = None) -> list[bytes]:
        """The hash fields to HMGET for a view: the features asked for, then `_ts`."""
        names = self.views[view].feature_names if features is None else features
        return [*(feature_field(view, n) for n in names), ts_field(view)]

    def decode_row(
        self, view: str, raw: Sequence[bytes | None], features: Sequence[str] | None = None
    ) -> tuple[dict[str, Any] | None, datetime | None]:
        """An HMGET reply (in `fields()` order) to ({feature: value}, event timestamp); (None, None) if absent."""
        names = self.views[view].feature_names if features is None else features
        ts = _DECODED.ts(raw[-1])
        if ts is None and not any(raw[:-1]):
            return None, None
        value = _DECODED.value
        return {n: value(r) for n, r in zip(names, raw[:-1], strict=True)}, ts
