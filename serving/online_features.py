"""Online features in the request and response shape of Feast's feature server `/get-online-features`, plus ages.

Same `metadata.feature_names` (join keys first) and per-column `values/statuses/event_timestamps`; `ages_s` is added
per column. A row older than its view's TTL at `now` has status OUTSIDE_MAX_AGE. `/v1/features` returns it as null
(pantry's rule: a stale value is not a current one); `/get-online-features`, the drop-in for `feast serve`, returns
the value as Feast's Redis store does, so a stock Feast SDK pointed at pantry gets what it reads from Redis itself.
"""

from __future__ import annotations

import math
from datetime import datetime

from litestar.exceptions import ValidationException

from pantry.featurestore.layout import ViewSchema
from pantry.featurestore.reader import RowRead
from pantry.featurestore.repo import FeatureServices
from pantry.schemas import FeaturesMetadata, FeaturesRequest, FeaturesResponse, FeatureVector
from serving.redis_guard import StoreUnavailable
from serving.services import Services

_ZERO_TS = "1970-01-01T00:00:00Z"
_STATUS = {"present": "PRESENT", "missing": "NOT_FOUND", "stale": "OUTSIDE_MAX_AGE"}


def _ts(ts: datetime | None) -> str:
    if ts is None:
        return _ZERO_TS
    text = ts.isoformat()[:19]  # YYYY-MM-DDTHH:MM:SS, a fifth of strftime's cost (5 rows a request)
    if ts.microsecond:
        text += f".{ts.microsecond:06d}".rstrip("0") if ts.microsecond % 1000 else f".{ts.microsecond // 1000:03d}"
    return text + "Z"


def _json_float(value: float) -> float | str:
    if value - value == 0.0:  # finite (inf - inf and nan - nan are nan)
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _json_floats(values: list[float]) -> list[float | str]:
    total = sum(values)
    if total - total == 0.0:  # every element finite: the list goes out as it is (embeddings are 64 floats)
        return values
    return [_json_float(v) for v in values]


# Per Feast value type, how a decoded value becomes what Feast's server returns in JSON (None: as it is). A view's
# columns have fixed types, so the choice is made once per column, not per value.
_TO_JSON = {
    "UNIX_TIMESTAMP": lambda ts: int(ts.timestamp()),  # Feast returns UNIX_TIMESTAMP values as epoch seconds
    "FLOAT": _json_float,
    "DOUBLE": _json_float,
    "FLOAT_LIST": _json_floats,
    "DOUBLE_LIST": _json_floats,
}


def _column(rows, feat: str, to_json) -> list:
    if to_json is None:
        return [row.values[feat] if row.values is not None else None for row in rows]
    return [None if row.values is None or (v := row.values[feat]) is None else to_json(v) for row in rows]


def _bad(message: str) -> ValidationException:
    return ValidationException(detail=message)


async def online_features(svc: Services, data: FeaturesRequest, *, stale_values: bool = False) -> FeaturesResponse:
    """Feast's /get-online-features response for the request, plus each value's age. `stale_values`: return the
    values of rows past their TTL (Feast's behaviour) instead of nulls; their status says OUTSIDE_MAX_AGE either way."""
    reader = svc.reader
    if reader is None:
        raise StoreUnavailable("feast registry not loaded (run `pantry feast apply`)")
    wanted = _resolve(data, svc.feature_services, reader.layout.views)
    lengths = {len(v) for v in data.entities.values()}
    if len(lengths) != 1:
        raise _bad("every entity column in `entities` must have the same number of values")
    n_rows = lengths.pop()
    reads = []
    for view, feats in wanted:
        join_keys = reader.layout.views[view].join_keys
        missing = [k for k in join_keys if k not in data.entities]
        if missing:
            raise _bad(f"feature view {view!r} needs entity key(s) {missing} in `entities`")
        for i in range(n_rows):
            reads.append(RowRead(view, tuple(data.entities[k][i] for k in join_keys), tuple(feats)))
    result = await svc.read(reads, None)  # StoreUnavailable -> 503 (there is no fallback for raw features)

    names = list(data.entities)
    vectors = [FeatureVector(list(col), ["PRESENT"] * n_rows, [_ZERO_TS] * n_rows, [None] * n_rows)
               for col in data.entities.values()]
    pos = 0
    for view, feats in wanted:
        rows = result.rows[pos: pos + n_rows]
        pos += n_rows
        # a view's features share their rows' timestamps and ages: formatted once per view, not per feature
        timestamps = [_ts(row.ts) for row in rows]
        ages = [row.age_s for row in rows]
        schema = reader.layout.views[view]
        if stale_values:
            rows = [row._replace(values=row.raw_values) if row.status == "stale" else row for row in rows]
        for feat in feats:
            names.append(f"{view}__{feat}" if data.full_feature_names else feat)
            vectors.append(FeatureVector(
                _column(rows, feat, _TO_JSON.get(schema.dtype(feat))),
                [_STATUS[row.status] if row.values is None or row.status == "stale" or row.values[feat] is not None
                 else "NULL_VALUE"
                 for row in rows],
                timestamps,
                ages,
            ))
    return FeaturesResponse(FeaturesMetadata(names), vectors)



def _resolve(data: FeaturesRequest, services: FeatureServices,
             views: dict[str, ViewSchema]) -> list[tuple[str, list[str]]]:
    if data.feature_service:
        if data.features:
            raise _bad("give either `feature_service` or `features`, not both")
        if data.feature_service not in services:
            raise _bad(f"unknown feature service {data.feature_service!r} (have: {', '.join(sorted(services))})")
        return [(view, list(feats)) for view, feats in services[data.feature_service]]
    if not data.features:
        raise _bad("give `feature_service` or a non-empty `features` list of 'view:feature'")
    grouped: dict[str, list[str]] = {}
    for ref in data.features:
        view, _, feat = ref.partition(":")
        if view not in views:
            raise _bad(f"unknown feature view {view!r} in {ref!r}")
        if feat not in {f.name for f in views[view].features}:
            raise _bad(f"feature view {view!r} has no feature {feat!r}")
        if feat not in grouped.setdefault(view, []):
            grouped[view].append(feat)
    return list(grouped.items())
