"""Drift of a served model's inputs and scores against its training snapshot (pure: numpy + msgspec, no Redis).

What is measured, per model and version:
- the numeric online features the model reads per decision (`MODEL_VIEWS`, the decoded rows of
  `decision.features[view]`): numbers as they are, lists as their length, timestamps as their age in days at the
  decision's `now` (a raw epoch time drifts by definition as the clock moves);
- the answer's scores: `score.top` (the best item's score) and `score.mean` (the mean over the answer's items).

The reference (`drift_reference.json`, written by training into each version dir and hashed by its manifest) holds,
per feature, bin edges from the training sample's deciles plus a "missing" bin (no row, a stale row, or no items),
and the sample's fraction per bin. Live decisions are counted into the same bins; PSI compares the two:
  PSI = sum_i (live_i - ref_i) * ln(live_i / ref_i), each fraction floored at PSI_EPSILON.
Thresholds (Settings.drift_moderate / drift_significant): < 0.1 stable, 0.1-0.25 moderate, > 0.25 significant.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from itertools import pairwise
from typing import Annotated, Any, Literal

import msgspec
import numpy as np

REFERENCE_FILE = "drift_reference.json"
PSI_EPSILON = 1e-4  # a bin empty on one side contributes a large but finite term
QUANTILES = tuple(i / 10 for i in range(1, 10))  # 10 bins (fewer when the values repeat, e.g. counts 0/1/2)
MISSING = "missing"
Status = Literal["stable", "moderate", "significant", "insufficient"]

# view -> (field, how it becomes a number): "num" as is, "len" a list's length, "age" days before the decision's now.
# Ids (preferred_store_id) and strings (model_version) are not distributions worth a PSI.
VIEW_FEATURES: dict[str, tuple[tuple[str, str], ...]] = {
    "customer_session": (("session_events", "num"), ("session_distinct_products", "num"),
                         ("session_product_ids", "len"), ("cart_product_ids", "len"), ("session_spend", "num"),
                         ("session_started_at", "age")),
    "customer_activity": (("orders_7d", "num"), ("orders_28d", "num"), ("spend_7d", "num"), ("spend_28d", "num"),
                          ("last_order_at", "age")),
    "customer_repertoire": (("repertoire_product_ids", "len"),),
    "customer_embedding": (("embedding", "len"),),
}
# the customer views each model reads per decision (serving/answers/*.py CUSTOMER_VIEWS; a test keeps them equal)
MODEL_VIEWS: dict[str, tuple[str, ...]] = {
    "recommender": ("customer_session", "customer_activity", "customer_repertoire", "customer_embedding"),
    "substitutions": ("customer_repertoire", "customer_session"),
    "next_best_action": ("customer_activity", "customer_repertoire", "customer_session"),
}
SCORE_FEATURES = ("score.top", "score.mean")

Fraction = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]


class FeatureReference(msgspec.Struct, frozen=True):
    name: Annotated[str, msgspec.Meta(max_length=128)]
    edges: Annotated[list[float], msgspec.Meta(max_length=64)]  # interior cut points, increasing
    fractions: Annotated[list[Fraction], msgspec.Meta(max_length=66)]  # len(edges) + 1 bins, then "missing"
    count: Annotated[int, msgspec.Meta(ge=0)]  # reference decisions (missing included)


class DriftReference(msgspec.Struct, frozen=True):
    model: Annotated[str, msgspec.Meta(max_length=64)]
    version: Annotated[str, msgspec.Meta(max_length=128)]
    trained_until: Annotated[str, msgspec.Meta(max_length=64)]
    sample: Annotated[int, msgspec.Meta(ge=0)]  # decisions in the reference sample
    features: Annotated[list[FeatureReference], msgspec.Meta(max_length=64)]
    note: Annotated[str, msgspec.Meta(max_length=512)] = ""  # how the sample was drawn


class FeatureDrift(msgspec.Struct, frozen=True):
    feature: str
    psi: float | None  # None: no live decision yet
    status: Status
    live_count: int
    bins: list[str]  # bin labels ("< 1", "1 - 2", ">= 7", "missing")
    reference_fractions: list[float]
    live_fractions: list[float]


def feature_names(model: str) -> list[str]:
    return [f"{view}.{f}" for view in MODEL_VIEWS[model] for f, _ in VIEW_FEATURES[view]] + list(SCORE_FEATURES)


def _number(value: Any, kind: str, now_s: float) -> float | None:
    if value is None:
        return None
    if kind == "len":
        return float(len(value))
    if kind == "age":
        t = value.timestamp() if isinstance(value, datetime) else float(value)
        return (now_s - t) / 86_400.0
    number = float(value)
    return number if math.isfinite(number) else None


def feature_values(views: Sequence[str], features: Mapping[str, Mapping[str, Any] | None], now_s: float,
                   scores: Sequence[float]) -> list[float | None]:
    """The numbers of one decision, in feature_names() order (None = missing)."""
    out: list[float | None] = []
    for view in views:
        row = features.get(view)
        for field, kind in VIEW_FEATURES[view]:
            out.append(None if row is None else _number(row.get(field), kind, now_s))
    if scores:
        out.extend((float(max(scores)), float(sum(scores) / len(scores))))
    else:
        out.extend((None, None))
    return out


def answer_scores(items: Iterable[Any]) -> list[float]:
    """The scores of an answer's items: Scored/Action have `score`; a Substitution holds `candidates`."""
    try:
        scores = [float(item.score) for item in items]  # the common case, in one comprehension (request path)
    except AttributeError:
        scores = []
        for item in items:
            score = getattr(item, "score", None)
            if score is not None:
                scores.append(float(score))
            else:
                scores.extend(float(c.score) for c in getattr(item, "candidates", ()))
    if not math.isfinite(sum(scores)):  # a NaN or inf would fall in an arbitrary bin
        scores = [s for s in scores if math.isfinite(s)]
    return scores


def bin_index(edges: Sequence[float], value: float | None) -> int:
    """The bin of a value: 0..len(edges) (bisect right: a value equal to an edge goes above it), len(edges)+1 when
    missing."""
    if value is None:
        return len(edges) + 1
    return bisect_right(edges, value)


def reference_for(name: str, values: Sequence[float | None]) -> FeatureReference:
    present = np.asarray([v for v in values if v is not None], dtype=np.float64)
    # "higher": every edge is a value of the sample, so repeated values (counts 0, 1, 2) keep their own bins
    quantiles = np.quantile(present, QUANTILES, method="higher") if len(present) else []
    edges = sorted({round(float(q), 9) for q in quantiles})
    counts = np.zeros(len(edges) + 2)
    for v in values:
        counts[bin_index(edges, v)] += 1
    total = max(len(values), 1)
    return FeatureReference(name, edges, [float(c / total) for c in counts], len(values))


def build_reference(model: str, version: str, trained_until: str, rows: Sequence[Sequence[float | None]],
                    note: str = "") -> DriftReference:
    """From the reference sample: one feature_values() list per decision."""
    names = feature_names(model)
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    return DriftReference(model, version, trained_until, len(rows),
                          [reference_for(n, col) for n, col in zip(names, columns, strict=True)], note)


def psi(reference: Sequence[float], live: Sequence[float], eps: float = PSI_EPSILON) -> float:
    ref = np.maximum(np.asarray(reference, dtype=np.float64), eps)
    cur = np.maximum(np.asarray(live, dtype=np.float64), eps)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def status_of(value: float | None, count: int, moderate: float, significant: float, min_count: int) -> Status:
    if value is None or count < min_count:
        return "insufficient"  # too few live decisions for a PSI to mean anything
    if value > significant:
        return "significant"
    return "moderate" if value >= moderate else "stable"


def bin_labels(edges: Sequence[float]) -> list[str]:
    if not edges:
        return ["present", MISSING]
    labels = [f"< {edges[0]:.3g}"]
    labels += [f"{lo:.3g} - {hi:.3g}" for lo, hi in pairwise(edges)]
    return [*labels, f">= {edges[-1]:.3g}", MISSING]


def field_of(feature: str, bin_: int) -> str:
    """The Redis hash field of one (feature, bin) count."""
    return f"{feature}|{bin_}"


def parse_counts(hashes: Iterable[Mapping[Any, Any]]) -> dict[str, dict[int, int]]:
    """Hashes of field_of() -> count (several days, several workers) summed per feature and bin."""
    out: dict[str, dict[int, int]] = {}
    for h in hashes:
        for raw_field, raw_count in h.items():
            text = raw_field.decode() if isinstance(raw_field, bytes) else str(raw_field)
            feature, _, b = text.rpartition("|")
            if not feature or not b.isdigit():
                continue  # not ours: ignored rather than failing the report
            per = out.setdefault(feature, {})
            per[int(b)] = per.get(int(b), 0) + int(raw_count)
    return out


def compare(reference: DriftReference, counts: Mapping[str, Mapping[int, int]], *, moderate: float,
            significant: float, min_count: int) -> list[FeatureDrift]:
    """PSI per feature of the live counts (parse_counts) against the reference."""
    out = []
    for ref in reference.features:
        n_bins = len(ref.fractions)
        live = np.zeros(n_bins)
        for b, c in counts.get(ref.name, {}).items():
            if 0 <= b < n_bins:
                live[b] += c
        total = int(live.sum())
        fractions = (live / total).tolist() if total else [0.0] * n_bins
        value = psi(ref.fractions, fractions) if total else None
        out.append(FeatureDrift(ref.name, None if value is None else round(value, 6),
                                status_of(value, total, moderate, significant, min_count), total,
                                bin_labels(ref.edges), list(ref.fractions), [round(f, 6) for f in fractions]))
    return out


def encode_reference(reference: DriftReference) -> bytes:
    return msgspec.json.format(msgspec.json.encode(reference))


def decode_reference(data: bytes) -> DriftReference:
    return msgspec.json.decode(data, type=DriftReference)
