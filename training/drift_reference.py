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


class Lines:
    """One customer's purchase lines before an instant, as arrays in time order (ties: the data's order)."""

    __slots__ = ("basket", "product", "sales", "ts")

    def __init__(self, ts: np.ndarray, product: np.ndarray, basket: np.ndarray, sales: np.ndarray):
        self.ts, self.product, self.basket, self.sales = ts, product, basket, sales

    def before(self, t: float) -> Lines:
        n = int(np.searchsorted(self.ts, t, side="left"))
        return Lines(self.ts[:n], self.product[:n], self.basket[:n], self.sales[:n])


def _session_row(b: Lines, t: float) -> dict[str, Any] | None:
    """The session the stream holds just before t (purchases only: a session is events within 30-minute gaps; the
    row expires an hour after its newest event)."""
    if not len(b.ts) or t - b.ts[-1] > SESSION_TTL_S:
        return None
    gaps = np.flatnonzero(np.diff(b.ts) > SESSION_GAP_S)
    start = int(gaps[-1]) + 1 if len(gaps) else 0
    products, times = b.product[start:], b.ts[start:]
    uniq, inv = np.unique(products, return_inverse=True)
    newest = np.full(len(uniq), -np.inf)
    np.maximum.at(newest, inv, times)
    newest_first = uniq[np.lexsort((-uniq, -newest))]  # the stream's order: newest first, then larger id first
    return {"session_events": len(products), "session_distinct_products": len(uniq),
            "session_product_ids": newest_first[:SESSION_PRODUCTS].tolist(),
            "cart_product_ids": [],  # purchases take items out of the cart
            "session_spend": float(b.sales[start:].sum()), "session_started_at": float(times[0])}


def _activity_row(b: Lines, t: float) -> dict[str, Any] | None:
    if not len(b.ts) or t - b.ts[-1] > ACTIVITY_TTL_S:
        return None
    uniq, inv = np.unique(b.basket, return_inverse=True)
    first = np.full(len(uniq), np.inf)
    np.minimum.at(first, inv, b.ts)
    spend = np.bincount(inv, weights=b.sales, minlength=len(uniq))
    w7, w28 = first > t - 7 * DAY_S, first > t - 28 * DAY_S
    return {"orders_7d": int(w7.sum()), "orders_28d": int(w28.sum()), "spend_7d": float(spend[w7].sum()),
            "spend_28d": float(spend[w28].sum()), "last_order_at": float(b.ts[-1])}


def _repertoire_row(b: Lines, t: float) -> dict[str, Any] | None:
    if not len(b.ts) or t - b.ts[-1] > REPERTOIRE_TTL_S:
        return None
    weight = np.power(2.0, (b.ts - REPERTOIRE_REF_T) / REPERTOIRE_HALF_LIFE_S)
    uniq, inv = np.unique(b.product, return_inverse=True)
    rep = np.bincount(inv, weights=weight, minlength=len(uniq))
    top = np.lexsort((uniq, -rep))[:REPERTOIRE_TOP]  # highest score first, ties to the smaller id
    newest = np.full(len(uniq), -np.inf)
    np.maximum.at(newest, inv, b.ts)
    recent = np.lexsort((-uniq, -newest))[:REPERTOIRE_RECENT]  # the stream keeps the largest (time, product)
    chosen = np.union1d(top, recent)
    if len(chosen) > len(top):
        top = chosen[np.lexsort((uniq[chosen], -rep[chosen]))]
    decay = 2.0 ** (-(t - REPERTOIRE_REF_T) / REPERTOIRE_HALF_LIFE_S)
    return {"repertoire_product_ids": uniq[top].tolist(), "repertoire_scores": (rep[top] * decay).tolist()}


def customer_views(purchases: pd.DataFrame, visits: pd.DataFrame, embedding_dim: int,
                   known: np.ndarray) -> list[dict[str, dict[str, Any] | None]]:
    """The decoded customer rows of each visit, one second before it (`known`: customers with an embedding)."""
    mine = purchases[purchases["customer_id"].isin(visits["customer_id"].unique())]
    mine = mine.assign(ts=mine["day"] * DAY_S).sort_values(["customer_id", "ts"], kind="stable")
    cust = mine["customer_id"].to_numpy()
    cols = [mine[c].to_numpy() for c in ("ts", "product_id", "basket_id", "sales_value")]
    bounds = np.flatnonzero(np.diff(cust)) + 1
    starts, ends = np.r_[0, bounds], np.r_[bounds, len(cust)]
    lines = {int(cust[a]): Lines(*(c[a:z] for c in cols)) for a, z in zip(starts, ends, strict=True) if z > a}
    empty = Lines(*(c[:0] for c in cols))
    known_set = set(known.tolist())
    out = []
    for visit in visits.itertuples(index=False):
        t = float(visit.t) - 1.0
        b = lines.get(int(visit.customer_id), empty).before(t)
        out.append({
            "customer_session": _session_row(b, t),
            "customer_activity": _activity_row(b, t),
            "customer_repertoire": _repertoire_row(b, t),
            "customer_embedding": ({"embedding": [0.0] * embedding_dim}
                                   if embedding_dim and visit.customer_id in known_set else None),
        })
    return out


def _scores(model: str, scorer: Any, visit: Any, features: Mapping[str, Any], campaigns: Any) -> list[float]:
    customer_id, now = int(visit.customer_id), datetime.fromtimestamp(float(visit.t) - 1.0, UTC)
    if model == "recommender":
        store = int(visit.store_id) if visit.store_id >= 0 else None
        items = scorer.recommend(features, customer_id=customer_id, k=10, surface="for_you", exclude=frozenset(),
                                 store_id=store)
    elif model == "substitutions":
        usual = int(visit.product_id)
        pool = scorer.candidate_pools([usual])[0][:20]
        items = scorer.rank([usual], [pool], customer_id=customer_id, features=features, stock={}, k=3)[0]
    else:
        ids, start, end = campaigns
        t = now.timestamp()
        active = frozenset(ids[(start <= t) & (end >= t)].tolist())
        items = scorer.actions(features, customer_id=customer_id, campaign_ids=active, k=3, channel="app", now=now)
    return drift.answer_scores(items)


def _scorer(model: str, directory: Path, manifest: Manifest) -> Any:
    from pantry.models.next_best_action import NextBestAction
    from pantry.models.recommender import Recommender
    from pantry.models.substitutions import Substitutions

    if model == "recommender":
        return Recommender(directory, manifest)  # its LRU: a customer with several visits is ranked once
    return Substitutions(directory, manifest) if model == "substitutions" else NextBestAction(directory, manifest)


def _campaigns(settings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(campaign ids, start, end as epoch seconds): what serving's CampaignBook offers at `now` when every
    campaign is approved (start <= now <= end)."""
    try:
        table = dataset.read_table(settings, "campaign_descriptions")
    except (OSError, FileNotFoundError):
        return np.empty(0, dtype=np.int64), np.empty(0), np.empty(0)
    zero = pd.Timestamp(0, tz="UTC")  # the unit of the parquet column (us or ns) does not matter this way
    epoch = [(pd.to_datetime(table[c], utc=True) - zero).dt.total_seconds().to_numpy() for c in ("start_date",
                                                                                                  "end_date")]
    return table["campaign_id"].to_numpy(np.int64), epoch[0], epoch[1]


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
    campaigns = _campaigns(settings) if model == "next_best_action" else None
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
