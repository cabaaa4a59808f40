"""The drift reference of a new model version (`drift_reference.json`, pantry/drift.py): what its inputs and scores
looked like on training data, for serving to compare live decisions against.

The sample: up to `Settings.drift_reference_sample` shopping visits (baskets) in the last REFERENCE_DAYS before the
cut, drawn with a fixed seed. A live decision happens when a shopper is about to shop; so for each visit the
customer views are rebuilt as the stream would have served them one second before it, from the purchases before
that instant (the same windows, decay and TTLs as streaming/features/customer.py; training cannot import the
stream, so the rules are restated here and tests/training/test_drift_reference.py checks them against the stream's
own functions). The scores are the new version's own answers for those customers at that instant, through the
serving scorer (pantry/models), so they are what serving would have answered.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pantry import dataset, drift
from pantry.models.registry import Manifest

REFERENCE_DAYS = 28
DAY_S = 86_400.0
SESSION_TTL_S = 3600.0  # customer_session's TTL (feature_repo/features.py)
ACTIVITY_TTL_S = 90 * DAY_S
REPERTOIRE_TTL_S = 365 * DAY_S
SESSION_GAP_S = 30 * 60.0
REPERTOIRE_TOP, REPERTOIRE_RECENT, SESSION_PRODUCTS = 50, 10, 20
REPERTOIRE_REF_T, REPERTOIRE_HALF_LIFE_S = 1483228800.0, 90 * DAY_S
SEED = 17


def sample_visits(purchases: pd.DataFrame, until: datetime, n: int) -> pd.DataFrame:
    """Up to n baskets of the last REFERENCE_DAYS before the cut: customer_id, basket_id, store_id, t (epoch s of
    the visit), product_id (one product of the basket, what a substitution request would name)."""
    ref_day = until.timestamp() / DAY_S
    recent = purchases[purchases["day"] >= ref_day - REFERENCE_DAYS]
    visits = recent.groupby(["customer_id", "basket_id"], sort=True).agg(
        day=("day", "min"), store_id=("store_id", "first"), product_id=("product_id", "first")).reset_index()
    if len(visits) > n:
        visits = visits.sample(n=n, random_state=SEED).sort_values(["customer_id", "day"])
    return visits.assign(t=visits["day"] * DAY_S).reset_index(drop=True)


def _session_row(before: pd.DataFrame, t: float) -> dict[str, Any] | None:
    """The session the stream holds just before t (purchases only: a session is events within 30-minute gaps; the
    row expires an hour after its newest event)."""
    if before.empty or t - before["ts"].iloc[-1] > SESSION_TTL_S:
        return None
    times = before["ts"].to_numpy()
    start = len(times) - 1
    while start > 0 and times[start] - times[start - 1] <= SESSION_GAP_S:
        start -= 1
    session = before.iloc[start:]
    products = session.drop_duplicates("product_id", keep="last")
    return {"session_events": len(session), "session_distinct_products": len(products),
            "session_product_ids": products["product_id"].tolist()[::-1][:SESSION_PRODUCTS],
            "cart_product_ids": [],  # purchases take items out of the cart
            "session_spend": float(session["sales_value"].sum()), "session_started_at": float(times[start])}


def _activity_row(before: pd.DataFrame, t: float) -> dict[str, Any] | None:
    if before.empty or t - before["ts"].iloc[-1] > ACTIVITY_TTL_S:
        return None
    baskets = before.groupby("basket_id").agg(ts=("ts", "min"), spend=("sales_value", "sum"))
    w7, w28 = baskets[baskets["ts"] > t - 7 * DAY_S], baskets[baskets["ts"] > t - 28 * DAY_S]
    return {"orders_7d": len(w7), "orders_28d": len(w28), "spend_7d": float(w7["spend"].sum()),
            "spend_28d": float(w28["spend"].sum()), "last_order_at": float(before["ts"].iloc[-1])}


def _repertoire_row(before: pd.DataFrame, t: float) -> dict[str, Any] | None:
    if before.empty or t - before["ts"].iloc[-1] > REPERTOIRE_TTL_S:
        return None
    weight = np.power(2.0, (before["ts"].to_numpy() - REPERTOIRE_REF_T) / REPERTOIRE_HALF_LIFE_S)
    rep = pd.Series(weight, index=before["product_id"].to_numpy()).groupby(level=0).sum()
    top = sorted(rep.items(), key=lambda kv: (-kv[1], kv[0]))[:REPERTOIRE_TOP]
    chosen = {p for p, _ in top}
    recent = before.drop_duplicates("product_id", keep="last").tail(REPERTOIRE_RECENT)["product_id"].tolist()
    extra = [(p, float(rep[p])) for p in recent if p not in chosen]
    if extra:
        top = sorted([*top, *extra], key=lambda kv: (-kv[1], kv[0]))
    decay = 2.0 ** (-(t - REPERTOIRE_REF_T) / REPERTOIRE_HALF_LIFE_S)
    return {"repertoire_product_ids": [int(p) for p, _ in top], "repertoire_scores": [s * decay for _, s in top]}


def customer_views(purchases: pd.DataFrame, visits: pd.DataFrame, embedding_dim: int,
                   known: np.ndarray) -> list[dict[str, dict[str, Any] | None]]:
    """The decoded customer rows of each visit, one second before it (`known`: customers with an embedding)."""
    lines = purchases.assign(ts=purchases["day"] * DAY_S).sort_values("ts", kind="stable")
    by_customer = {c: g for c, g in lines.groupby("customer_id", sort=False)}
    known_set = set(known.tolist())
    out = []
    for visit in visits.itertuples(index=False):
        t = float(visit.t) - 1.0
        mine = by_customer.get(visit.customer_id)
        before = mine[mine["ts"] < t] if mine is not None else lines.iloc[:0]
        out.append({
            "customer_session": _session_row(before, t),
            "customer_activity": _activity_row(before, t),
            "customer_repertoire": _repertoire_row(before, t),
            "customer_embedding": ({"embedding": [0.0] * embedding_dim}
                                   if embedding_dim and visit.customer_id in known_set else None),
        })
    return out


def _scores(model: str, scorer: Any, visit: Any, features: Mapping[str, Any], campaigns: pd.DataFrame) -> list[float]:
    customer_id, now = int(visit.customer_id), datetime.fromtimestamp(float(visit.t) - 1.0, UTC)
    if model == "recommender":
        store = int(visit.store_id) if visit.store_id >= 0 else None
        items = scorer.recommend(features, customer_id=customer_id, k=10, surface="for_you", exclude=frozenset(),
                                 store_id=store)
    elif model == "substitutions":
        pool = scorer.candidate_pool(int(visit.product_id))[:20]
        items = scorer.rank(int(visit.product_id), pool, customer_id=customer_id, features=features, stock={},
                            k=3) if pool else []
    else:
        active = campaigns[(campaigns["start_date"] <= now) & (campaigns["end_date"] >= now)]
        items = scorer.actions(features, customer_id=customer_id, campaign_ids=frozenset(active["campaign_id"]),
                               k=3, channel="app", now=now)
    return drift.answer_scores(items)


def _scorer(model: str, directory: Path, manifest: Manifest) -> Any:
    from pantry.models.next_best_action import NextBestAction
    from pantry.models.recommender import Recommender
    from pantry.models.substitutions import Substitutions

    if model == "recommender":
        return Recommender(directory, manifest, cache_size=0)
    return Substitutions(directory, manifest) if model == "substitutions" else NextBestAction(directory, manifest)


def _campaigns(settings) -> pd.DataFrame:
    try:
        table = dataset.read_table(settings, "campaign_descriptions")
    except (OSError, FileNotFoundError):
        return pd.DataFrame({"campaign_id": [], "start_date": [], "end_date": []})
    for col in ("start_date", "end_date"):
        table[col] = pd.to_datetime(table[col], utc=True)
    return table


class Sample:
    """The visits and their customer rows, built once per training run (on first use) for every model trained."""

    def __init__(self, settings, purchases: pd.DataFrame, until: datetime, embedding_dim: int, known: np.ndarray):
        self.settings, self.purchases, self.until = settings, purchases, until
        self.embedding_dim, self.known = embedding_dim, known
        self._built: tuple[pd.DataFrame, list[dict[str, Any]]] | None = None

    def get(self) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
        if self._built is None:
            visits = sample_visits(self.purchases, self.until, self.settings.drift_reference_sample)
            self._built = visits, customer_views(self.purchases, visits, self.embedding_dim, self.known)
        return self._built


def write_reference(sample: Sample, model: str, staging: Path, manifest: Manifest) -> drift.DriftReference:
    """Score the visits with the staged version, build its reference and write it into the staging dir (publish()
    then hashes it with the other files)."""
    settings, until = sample.settings, sample.until
    visits, views = sample.get()
    scorer = _scorer(model, staging, manifest)
    campaigns = _campaigns(settings) if model == "next_best_action" else pd.DataFrame()
    model_views = drift.MODEL_VIEWS[model]
    rows = []
    for visit, features in zip(visits.itertuples(index=False), views, strict=True):
        scores = _scores(model, scorer, visit, features, campaigns)
        rows.append(drift.feature_values(model_views, features, float(visit.t) - 1.0, scores))
    note = (f"{len(visits)} visits of the last {REFERENCE_DAYS} days before {until.date()}, features as served one "
            f"second before each, scores of this version")
    reference = drift.build_reference(model, manifest.version, manifest.trained_until, rows, note)
    (staging / drift.REFERENCE_FILE).write_bytes(drift.encode_reference(reference))
    return reference
