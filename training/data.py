"""Training inputs: purchases strictly before a cut (the data set's and the live ones of the event archive), index
maps, the interaction matrix, per-customer histories, substitution feedback labels, and point-in-time feature rows
from Feast's offline store (`historical_features`).

Every function here takes the cut and never returns a row at or after it; `tests/training/test_leak.py` checks
the matrix and histories built from a cut against the raw events, and that a feature-log row at or after the
cut never reaches a training set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import scipy.sparse as sp

from pantry import dataset, event_archive
from pantry.featurestore import feast_sdk, repo
from pantry.models._shared import lookup_many
from pantry.models.recommender_candidates import History
from pantry.settings import Settings

DAY_S = 86_400.0
HALF_LIFE_DAYS = 90.0
SHORT_HALF_LIFE_DAYS = 21.0
STORE_WINDOW_DAYS = 28
LONG_WEEKS = 26
SHORT_WEEKS = 5


def parse_until(text: str) -> datetime:
    """`YYYY-MM-DD` (or a full ISO timestamp) as an aware UTC datetime."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"--until {text!r} is not a date (YYYY-MM-DD)") from exc
    if isinstance(value, date) and not isinstance(value, datetime):  # pragma: no cover - fromisoformat gives datetime
        value = datetime(value.year, value.month, value.day)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def default_until(settings: Settings) -> datetime:
    """The day after the data set's last event: the data set, all of it (the evaluation's reference)."""
    last = datetime.fromisoformat(dataset.manifest(settings).last_event)
    return datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1)


def latest_until(settings: Settings) -> datetime:
    """The day after the last event of the data set or the event archive: train on everything."""
    until = default_until(settings)
    last = event_archive.last_event_ts(settings.event_archive_dir)
    if last is not None:
        until = max(until, datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1))
    return until


def data_digest(settings: Settings, until: datetime) -> str:
    """What a model was trained on: the data set's digest, combined with the event archive's before `until` when
    it has any (a retrain after live traffic is not "up to date" with one before it)."""
    import hashlib

    base = dataset.manifest(settings).events_sha256
    archived = event_archive.digest(settings.event_archive_dir, until)
    return hashlib.sha256(f"{base}:{archived}".encode()).hexdigest() if archived else base


# A feature row written for an event carries that event's time; an entity row at exactly that time would see it
# (Feast joins rows at or before the entity timestamp). Entities are asked as of this much before their event.
BEFORE_EVENT = timedelta(seconds=1)


def feature_log_present(settings: Settings, views: Sequence[str]) -> bool:
    """True when the streaming dataflow has written the offline feature log of every view (`pantry stream ...`)."""
    return all(any((settings.feature_log_dir / v).glob("*/*.parquet")) for v in views)


def _patch_feast_dask_sort() -> None:
    """Feast 0.67's dask offline store masks rows outside the TTL to NaT and then sorts by timestamp; with a
    feature log of many files (one dask partition each) dask cannot compute sort divisions over those NaTs and
    raises. Feast already retries that sort on one partition, but only for ZeroDivisionError (dask#8939): retry
    the same way for this error too. Results are unchanged (the sort is only there to keep the latest row)."""
    feast_sdk.import_feast()
    from feast.infra.offline_stores import dask as feast_dask

    original = feast_dask._drop_duplicates
    if getattr(original, "pantry_patched", False):
        return

    def drop_duplicates(df_to_join, *args, **kwargs):
        try:
            return original(df_to_join, *args, **kwargs)
        except (NotImplementedError, TypeError):
            return original(df_to_join.repartition(npartitions=1), *args, **kwargs)

    drop_duplicates.pantry_patched = True  # type: ignore[attr-defined]
    feast_dask._drop_duplicates = drop_duplicates


def historical_features(settings: Settings, entities: pd.DataFrame, features: Sequence[str],
                        until: datetime | None) -> pd.DataFrame:
    """Feast `get_historical_features` (point-in-time join over the offline feature log and batch sources): for
    each entity row (join keys + `event_timestamp`), the latest feature row at or before that timestamp within the
    view's TTL, in the entity frame's order (Feast answers each distinct entity row once; repeats are mapped
    back here). With `until`, every entity timestamp must be strictly before it, so no feature row at or after
    `until` can be joined."""
    ts = pd.to_datetime(entities["event_timestamp"], utc=True)
    if until is not None and len(ts) and ts.max() >= pd.Timestamp(until):
        raise ValueError(f"entity rows at or after --until {until.isoformat()} asked for features")
    frame = entities.assign(event_timestamp=ts)
    keys = list(frame.columns)
    if frame.empty:
        return frame
    _patch_feast_dask_sort()
    store = repo.store(settings)
    got = store.get_historical_features(entity_df=frame.drop_duplicates(keys), features=list(features)).to_df()
    got["event_timestamp"] = pd.to_datetime(got["event_timestamp"], utc=True)
    return frame.merge(got.drop_duplicates(keys), on=keys, how="left")


def to_days(ts: datetime) -> float:
    return ts.timestamp() / DAY_S


def load_purchases(settings: Settings, until: datetime, archive: bool = True) -> pd.DataFrame:
    """Purchase lines strictly before `until`: customer_id, product_id, store_id, basket_id, quantity, day; the
    data set's, then (`archive`) the live ones of the event archive (one per event_id, with a customer, and none the
    data set already holds: the shopper simulator posts the data's own lines with their ids), the whole in event-time
    order."""
    cols = ["event_id", "type", "ts", "customer_id", "product_id", "store_id", "basket_id", "quantity", "sales_value"]
    table = dataset.read_events(settings, until=until, columns=cols)
    df = table.drop_columns(["event_id"]).to_pandas()
    df = df[df["type"] == "purchase"].drop(columns="type")
    if archive:
        live = event_archive.read(settings.event_archive_dir, until, types=["purchase"],
                                  columns=[c for c in cols if c != "type"])
        live = live.filter(pc.and_(pc.is_valid(live.column("customer_id")),  # ids stay int64 (no nulls)
                                   pc.invert(pc.is_in(live.column("event_id"), table.column("event_id")))))
        live = live.drop_columns(["event_id"]).to_pandas()
        if len(live):
            df = pd.concat([df, live], ignore_index=True).sort_values("ts", kind="stable")
    df = df[df["ts"] < pd.Timestamp(until)]  # belt and braces: the parquet filter already did this
    out = pd.DataFrame(
        {
            "customer_id": df["customer_id"].to_numpy(dtype=np.int64),
            "product_id": df["product_id"].to_numpy(dtype=np.int64),
            "store_id": df["store_id"].fillna(-1).to_numpy(dtype=np.int64),
            "basket_id": df["basket_id"].to_numpy(dtype=np.int64),
            "quantity": df["quantity"].fillna(1).to_numpy(dtype=np.int64),
            "sales_value": df["sales_value"].to_numpy(dtype=np.float64),
            "day": df["ts"].astype("int64").to_numpy() / 1e6 / DAY_S,
        }
    )
    return out.reset_index(drop=True)


def substitution_feedback(settings: Settings, until: datetime) -> pd.DataFrame:
    """The substitution ranker's labels from live traffic: every `substitution_feedback` of the event archive before
    `until` (one per event_id), as customer_id, store_id, original_product_id, substitute_product_id, accepted
    (the shopper took the substitute: a positive for that candidate of that original, else a negative), decision_id
    (the /v1/substitutions answer that offered it, when the client said), day (event time in days). The data set
    has no such events: empty until live traffic brings some."""
    cols = ["ts", "customer_id", "store_id", "original_product_id", "substitute_product_id", "accepted", "decision_id"]
    table = event_archive.read(settings.event_archive_dir, until, types=["substitution_feedback"], columns=cols)
    df = table.to_pandas()
    df["day"] = df.pop("ts").astype("int64").to_numpy() / 1e6 / DAY_S if len(df) else pd.Series(dtype=np.float64)
    return df.reset_index(drop=True)


@dataclass(frozen=True)
class Index:
    """Dense indices for customers and products (sorted ids; position = index)."""

    customers: np.ndarray  # int64 customer ids
    products: np.ndarray  # int64 product ids

    @classmethod
    def from_purchases(cls, purchases: pd.DataFrame) -> Index:
        return cls(np.unique(purchases["customer_id"].to_numpy()), np.unique(purchases["product_id"].to_numpy()))

    def user_idx(self, customer_ids: np.ndarray) -> np.ndarray:
        """Index of each customer, -1 when unknown."""
        return lookup_many(self.customers, customer_ids)

    def item_idx(self, product_ids: np.ndarray) -> np.ndarray:
        return lookup_many(self.products, product_ids)


def interaction_matrix(purchases: pd.DataFrame, index: Index) -> sp.csr_matrix:
    """customers x products, value = number of baskets with the product (quantities are noisy: fuel, weights)."""
    pairs = purchases[["customer_id", "product_id", "basket_id"]].drop_duplicates()
    rows = index.user_idx(pairs["customer_id"].to_numpy())
    cols = index.item_idx(pairs["product_id"].to_numpy())
    ok = (rows >= 0) & (cols >= 0)
    data = np.ones(int(ok.sum()), dtype=np.float32)
    shape = (len(index.customers), len(index.products))
    matrix = sp.csr_matrix((data, (rows[ok], cols[ok])), shape=shape, dtype=np.float32)
    matrix.sum_duplicates()
    return matrix


def build_history(purchases: pd.DataFrame, index: Index, until: datetime) -> History:
    ref = to_days(until)
    per_basket = purchases.groupby(["customer_id", "product_id", "basket_id"], sort=False)["day"].min().reset_index()
    per_basket["u"] = index.user_idx(per_basket["customer_id"].to_numpy())
    per_basket["i"] = index.item_idx(per_basket["product_id"].to_numpy())
    age = ref - per_basket["day"].to_numpy()
    per_basket["w"] = np.power(0.5, age / HALF_LIFE_DAYS)
    per_basket["ws"] = np.power(0.5, age / SHORT_HALF_LIFE_DAYS)
    week = np.floor(age / 7.0)
    per_basket["wk_long"] = np.where(week < LONG_WEEKS, week, -1)
    per_basket["wk_short"] = np.where(week < SHORT_WEEKS, week, -1)
    agg = (
        per_basket.groupby(["u", "i"], sort=True)
        .agg(count=("day", "size"), decayed=("w", "sum"), decayed_short=("ws", "sum"),
             first_day=("day", "min"), last_day=("day", "max"))
        .reset_index()
    )
    # distinct recent weeks with the item (regularity: staples show up most weeks)
    for col, out in (("wk_long", "weeks_long"), ("wk_short", "weeks_short")):
        wk = per_basket[per_basket[col] >= 0].drop_duplicates(["u", "i", col]).groupby(["u", "i"]).size()
        agg[out] = wk.reindex(pd.MultiIndex.from_arrays([agg["u"], agg["i"]])).fillna(0).to_numpy()
    cust_weeks = per_basket[per_basket["wk_long"] >= 0].drop_duplicates(["u", "wk_long"]).groupby("u").size()
    n_users = len(index.customers)
    u = agg["u"].to_numpy()
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.add.at(indptr, u + 1, 1)
    indptr = np.cumsum(indptr)
    baskets = purchases.groupby("customer_id")["basket_id"].nunique()
    n_baskets = np.zeros(n_users, dtype=np.float32)
    n_baskets[index.user_idx(baskets.index.to_numpy())] = baskets.to_numpy()
    active_weeks = np.zeros(n_users, dtype=np.float32)
    active_weeks[cust_weeks.index.to_numpy()] = cust_weeks.to_numpy()
    return History(
        indptr=indptr,
        items=agg["i"].to_numpy(dtype=np.int64),
        count=agg["count"].to_numpy(dtype=np.float32),
        decayed=agg["decayed"].to_numpy(dtype=np.float32),
        decayed_short=agg["decayed_short"].to_numpy(dtype=np.float32),
        first_day=agg["first_day"].to_numpy(dtype=np.float64),
        last_day=agg["last_day"].to_numpy(dtype=np.float64),
        weeks_long=agg["weeks_long"].to_numpy(dtype=np.float32),
        weeks_short=agg["weeks_short"].to_numpy(dtype=np.float32),
        n_baskets=n_baskets,
        active_weeks=active_weeks,
        ref_day=ref,
    )


def item_popularity(
    purchases: pd.DataFrame, index: Index, until: datetime, days: int = STORE_WINDOW_DAYS
) -> np.ndarray:
    """Distinct customers per item over the last `days` before the cut (+ a small all-time term to break ties)."""
    ref = to_days(until)
    recent = purchases[purchases["day"] >= ref - days]
    pop = np.zeros(len(index.products), dtype=np.float32)
    rc = recent.groupby("product_id")["customer_id"].nunique()
    pop[index.item_idx(rc.index.to_numpy())] = rc.to_numpy()
    total = purchases.groupby("product_id")["customer_id"].nunique()
    pop[index.item_idx(total.index.to_numpy())] += 1e-3 * total.to_numpy()
    return pop
