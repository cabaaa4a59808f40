"""Fitting the next-best-action ranker: the coupons of a customer's active campaigns, by redemption likelihood.

Features of a (customer, coupon, day) are taken as of a cut (point in time: purchases and redemptions strictly
before it) plus the campaign's calendar on the day. The ranker is LightGBM lambdarank (ONNX via onnxmltools,
training/gbm.py) trained on the redemptions of monthly snapshots over [until - TRAIN_DAYS, until), each with
features as of its snapshot (the candidates of each redemption = the coupons of the customer's campaigns active
that day); a conditional logit when there are too few redemptions for trees (a small slice). The point-in-time
tables are built here (`build_tables`); candidates and features are pantry/models/next_best_action.py's, the code
serving ranks with.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pantry import dataset
from pantry.models._shared import lookup
from pantry.models.next_best_action import FEATURE_NAMES, FIELDS, Tables, candidates, features
from pantry.scoring import ModelError
from pantry.settings import Settings
from training.data import BEFORE_EVENT, DAY_S, HALF_LIFE_DAYS, feature_log_present, historical_features, to_days
from training.gbm import Boosted, GbmParams, fit_lambdarank
from training.logistic import Logistic, fit_conditional_logit
from training.onnx_export import PARITY_TOLERANCE, ranker_parity
from training.timing import Timer

TRAIN_DAYS = 120
SNAPSHOT_DAYS = 30
L2 = 30.0  # the conditional logit's (small data only); chosen on the validation cut (experiments/nba_ranker.py)
# Chosen on a validation cut before the test cut (train before 2017-09-01, score September; experiments/nba_ranker.py):
# shallow trees, slow learning rate; deeper or longer fits overfit the few hundred redemptions.
RANKER_GBM = GbmParams(objective="lambdarank", n_trees=100, num_leaves=7, learning_rate=0.05, min_child_samples=50)
MIN_EVENTS_FOR_TREES = 200
RECENT_DAYS = 28
# The customer's live repertoire (Feast, as of the day before each redemption) scored against each coupon. Measured
# on the validation cut it made the ranker worse (experiments/nba_ranker.py: hit@3 0.139 with vs 0.206 without), so the
# served ranker does not use it; `live=True` appends these columns for that comparison.
LIVE_FEATURE_NAMES = ("log_repertoire_score", "log_repertoire_products")
REPERTOIRE_FEATURES = ("customer_repertoire:repertoire_product_ids", "customer_repertoire:repertoire_scores")


def _csr(keys: np.ndarray, universe: np.ndarray, *cols: np.ndarray) -> tuple[np.ndarray, ...]:
    """Group rows by key (sorted universe) into CSR: (indptr, *cols sorted by key)."""
    pos = np.searchsorted(universe, keys)
    order = np.argsort(pos, kind="stable")
    counts = np.bincount(pos, minlength=len(universe))
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return (indptr, *(c[order] for c in cols))


def build_tables(settings: Settings, purchases: pd.DataFrame, cut: datetime) -> Tables:
    ref = to_days(cut)
    before = purchases[purchases["day"] < ref]
    coupons_df = dataset.read_table(settings, "coupons")
    desc = dataset.read_table(settings, "campaign_descriptions").sort_values("campaign_id")
    enrol = dataset.read_table(settings, "campaigns")
    red = dataset.read_table(settings, "coupon_redemptions")
    red = red[red["redemption_date"] < pd.Timestamp(cut)]

    coupons = np.unique(coupons_df["coupon_upc"].to_numpy(np.int64))
    cp = coupons_df[["coupon_upc", "product_id"]].drop_duplicates()
    n_products = cp.groupby("coupon_upc").size().reindex(coupons).fillna(0).to_numpy(np.float32)
    buyers_per_product = before.groupby("product_id")["customer_id"].nunique()
    cp_b = cp.assign(b=cp["product_id"].map(buyers_per_product).fillna(0))
    coupon_buyers = cp_b.groupby("coupon_upc")["b"].sum().reindex(coupons).fillna(0).to_numpy(np.float32)
    coupon_red = red.groupby("coupon_upc").size().reindex(coupons).fillna(0).to_numpy(np.float32)

    # customer x coupon affinity: baskets with any of the coupon's products
    lines = before[["customer_id", "product_id", "basket_id", "day"]].drop_duplicates(["customer_id", "basket_id",
                                                                                        "product_id"])
    m = lines.merge(cp, on="product_id")
    m = m.drop_duplicates(["customer_id", "coupon_upc", "basket_id"])
    m["w"] = np.power(0.5, (ref - m["day"].to_numpy()) / HALF_LIFE_DAYS)
    m["recent"] = (m["day"] >= ref - RECENT_DAYS).astype(np.float32)
    aff = m.groupby(["customer_id", "coupon_upc"]).agg(aff=("basket_id", "size"), dec=("w", "sum"),
                                                          rec=("recent", "sum")).reset_index()
    distinct = lines.merge(cp, on="product_id").groupby(["customer_id", "coupon_upc"])["product_id"].nunique()
    aff = aff.merge(distinct.rename("distinct").reset_index(), on=["customer_id", "coupon_upc"], how="left")
    # category affinity, for enrolled (customer, coupon) pairs: baskets with any product of the coupon's categories
    cats = dataset.read_table(settings, "products")[["product_id", "category"]].dropna()
    cust_cat = lines.merge(cats, on="product_id").drop_duplicates(["customer_id", "basket_id", "category"])
    cust_cat = cust_cat.groupby(["customer_id", "category"]).size().rename("cat").reset_index()
    coupon_cat = cp.merge(cats, on="product_id")[["coupon_upc", "category"]].drop_duplicates()
    camp_coupon = coupons_df[["campaign_id", "coupon_upc"]].drop_duplicates()
    enrolled_pairs = enrol[["customer_id", "campaign_id"]].merge(camp_coupon, on="campaign_id")
    enrolled_pairs = enrolled_pairs[["customer_id", "coupon_upc"]].drop_duplicates()
    cat_aff = (
        enrolled_pairs.merge(coupon_cat, on="coupon_upc").merge(cust_cat, on=["customer_id", "category"])
        .groupby(["customer_id", "coupon_upc"])["cat"].max().reset_index()
    )
    aff = aff.merge(cat_aff, on=["customer_id", "coupon_upc"], how="outer")
    redeemed = red.groupby(["customer_id", "coupon_upc"]).size().rename("red").reset_index()
    pairs = aff.merge(redeemed, on=["customer_id", "coupon_upc"], how="outer").fillna(0)
    customers = np.unique(np.concatenate([pairs["customer_id"].to_numpy(np.int64),
                                          enrol["customer_id"].to_numpy(np.int64),
                                          before["customer_id"].to_numpy(np.int64)]))
    pairs = pairs.assign(ci=np.searchsorted(coupons, pairs["coupon_upc"].to_numpy(np.int64)))
    pairs = pairs.sort_values(["customer_id", "ci"], kind="stable")  # coupons sorted per customer: searchsorted
    p_ptr, p_cpn, p_aff, p_dec, p_rec, p_red, p_dist, p_cat = _csr(
        pairs["customer_id"].to_numpy(np.int64), customers, pairs["ci"].to_numpy(np.int64),
        pairs["aff"].to_numpy(np.float32), pairs["dec"].to_numpy(np.float32), pairs["rec"].to_numpy(np.float32),
        pairs["red"].to_numpy(np.float32), pairs["distinct"].to_numpy(np.float32), pairs["cat"].to_numpy(np.float32),
    )
    cust_baskets = before.groupby("customer_id")["basket_id"].nunique().reindex(customers).fillna(0)
    cust_red = red.groupby("customer_id").size().reindex(customers).fillna(0).to_numpy(np.float32)
    e_ptr, e_camp = _csr(enrol["customer_id"].to_numpy(np.int64), customers, enrol["campaign_id"].to_numpy(np.int64))

    campaigns = desc["campaign_id"].to_numpy(np.int64)
    ctype = desc["campaign_type"].map({"A": 0, "B": 1, "C": 2}).fillna(0).to_numpy(np.int64)
    start = desc["start_date"].astype("int64").to_numpy() / 1e6 / DAY_S
    end = desc["end_date"].astype("int64").to_numpy() / 1e6 / DAY_S
    cc = coupons_df[["campaign_id", "coupon_upc"]].drop_duplicates()
    cc = cc[cc["campaign_id"].isin(campaigns)]
    c_ptr, c_cpn = _csr(cc["campaign_id"].to_numpy(np.int64), campaigns,
                        np.searchsorted(coupons, cc["coupon_upc"].to_numpy(np.int64)).astype(np.int64))

    top = before.groupby(["customer_id", "product_id"]).agg(n=("basket_id", "nunique"), last=("day", "max"))
    top = top.reset_index()
    top["w"] = top["n"] * np.power(0.5, (ref - top["last"].to_numpy()) / HALF_LIFE_DAYS)
    top = top.sort_values(["customer_id", "w"], ascending=[True, False]).groupby("customer_id").head(3)
    n_ptr, n_prod, n_cnt = _csr(top["customer_id"].to_numpy(np.int64), customers,
                                top["product_id"].to_numpy(np.int64), top["n"].to_numpy(np.float32))
    cp_sorted = cp.sort_values(["coupon_upc", "product_id"])
    cp_ptr, cp_prod = _csr(cp_sorted["coupon_upc"].to_numpy(np.int64), coupons,
                           cp_sorted["product_id"].to_numpy(np.int64))
    return Tables(ref, coupons, coupon_red, coupon_buyers, n_products, customers, p_ptr, p_cpn, p_aff, p_dec, p_rec,
                  p_red, p_dist, p_cat, cust_baskets.to_numpy(np.float32), cust_red, e_ptr, e_camp, campaigns, ctype,
                  start, end, c_ptr, c_cpn, n_ptr, n_prod, n_cnt, cp_ptr, cp_prod)


Repertoire = tuple[np.ndarray, np.ndarray]  # the customer_repertoire feature row: product ids, decayed scores


def repertoire_of(row: dict | None) -> Repertoire | None:
    """The customer_repertoire feature row (online read or Feast historical retrieval) as arrays; None if absent."""
    if not row:
        return None
    ids, scores = row.get("repertoire_product_ids"), row.get("repertoire_scores")
    if not hasattr(ids, "__len__") or not hasattr(scores, "__len__") or len(ids) == 0:  # None / NaN: no row
        return None
    return np.asarray(ids, dtype=np.int64), np.asarray(scores, dtype=np.float64)


def repertoire_columns(t: Tables, coupon_idx: np.ndarray, rep: Repertoire | None) -> tuple[np.ndarray, np.ndarray]:
    """Per coupon: the customer's live repertoire score summed over the coupon's products, and how many of them."""
    if rep is None or len(coupon_idx) == 0:
        return np.zeros(len(coupon_idx)), np.zeros(len(coupon_idx))
    ids, scores = rep
    order = np.argsort(ids)
    ids, scores = ids[order], scores[order]
    lo, hi = t.cpn_prod_indptr[coupon_idx], t.cpn_prod_indptr[coupon_idx + 1]
    sizes = hi - lo
    flat = np.concatenate([t.cpn_products[a:b] for a, b in zip(lo, hi, strict=True)]) if sizes.sum() else np.empty(0)
    pos = np.clip(np.searchsorted(ids, flat), 0, len(ids) - 1)
    hit = ids[pos] == flat
    owner = np.repeat(np.arange(len(coupon_idx)), sizes)
    score = np.bincount(owner[hit], weights=scores[pos[hit]], minlength=len(coupon_idx))
    count = np.bincount(owner[hit], minlength=len(coupon_idx)).astype(np.float64)
    return score, count


def live_features(t: Tables, coupon_idx: np.ndarray, repertoire: Repertoire | None) -> np.ndarray:
    """The LIVE_FEATURE_NAMES columns."""
    score, count = repertoire_columns(t, coupon_idx, repertoire)
    return np.stack([np.log1p(score), np.log1p(count)], axis=1).astype(np.float32)


def redemption_events(settings: Settings, start: datetime, end: datetime | None) -> pd.DataFrame:
    red = dataset.read_table(settings, "coupon_redemptions")
    red = red[red["redemption_date"] >= pd.Timestamp(start)]
    if end is not None:
        red = red[red["redemption_date"] < pd.Timestamp(end)]
    red = red.assign(day=red["redemption_date"].astype("int64").to_numpy() / 1e6 / DAY_S)
    return red.sort_values(["redemption_date", "customer_id", "coupon_upc"]).reset_index(drop=True)


def repertoires_at(settings: Settings, events: pd.DataFrame, until: datetime | None) -> list[Repertoire | None]:
    """The customer_repertoire row each customer had just before the day of each redemption (the redemption's
    time is a date): Feast point-in-time retrieval over the offline feature log. All None without a feature log
    (the stream has not run on this data): the features are then those of a customer without a live repertoire."""
    if events.empty or not feature_log_present(settings, ["customer_repertoire"]):
        return [None] * len(events)
    entities = pd.DataFrame({
        "customer_id": events["customer_id"].to_numpy(np.int64),
        "event_timestamp": pd.to_datetime(events["redemption_date"], utc=True) - BEFORE_EVENT,
    })
    got = historical_features(settings, entities, REPERTOIRE_FEATURES, until)
    return [repertoire_of({"repertoire_product_ids": ids, "repertoire_scores": sc})
            for ids, sc in zip(got["repertoire_product_ids"], got["repertoire_scores"], strict=True)]


def event_sets(t: Tables, events: pd.DataFrame, repertoires: list[Repertoire | None] | None = None):
    """Per redemption: (row, candidate coupon idx, campaign idx, features, index of the redeemed coupon or -1).
    With `repertoires` (one per event), the LIVE_FEATURE_NAMES columns are appended."""
    all_campaigns = t.campaigns
    for k, row in enumerate(events.itertuples(index=False)):
        cpn, camp = candidates(t, int(row.customer_id), all_campaigns, float(row.day))
        target = lookup(t.coupons, int(row.coupon_upc))
        if len(cpn) == 0:
            yield row, cpn, camp, None, -1
            continue
        where = np.flatnonzero(cpn == target)
        x = features(t, int(row.customer_id), cpn, camp, float(row.day))
        if repertoires is not None:
            x = np.concatenate([x, live_features(t, cpn, repertoires[k])], axis=1)
        yield row, cpn, camp, x, (int(where[0]) if len(where) else -1)


def training_groups(settings: Settings, purchases: pd.DataFrame, until: datetime, train_days: int = TRAIN_DAYS,
                    live: bool = False) -> tuple[list[np.ndarray], list[int]]:
    """Snapshots every SNAPSHOT_DAYS back to `train_days`: features as of each snapshot, the redemptions of the
    following SNAPSHOT_DAYS as labels (features are never older than a month, as after a monthly retrain). With
    `live`, the repertoire of each redemption comes from one Feast historical retrieval over all of them.
    Returns the candidate blocks and the redeemed row of each."""
    inners = [until - timedelta(days=back) for back in range(SNAPSHOT_DAYS, train_days + 1, SNAPSHOT_DAYS)]
    windows = [redemption_events(settings, inner, min(inner + timedelta(days=SNAPSHOT_DAYS), until))
               for inner in inners]
    every = pd.concat(windows, ignore_index=True) if windows else pd.DataFrame()
    reps = repertoires_at(settings, every, until) if live else None
    xs, pos, offset = [], [], 0
    for inner, window in zip(inners, windows, strict=True):
        t = build_tables(settings, purchases, inner)
        mine = reps[offset : offset + len(window)] if reps is not None else None
        offset += len(window)
        for _row, _cpn, _camp, x, target in event_sets(t, window, mine):
            if x is None or target < 0:
                continue
            xs.append(x)
            pos.append(target)
    return xs, pos


def fit_ranker(xs: list[np.ndarray], pos: list[int], gbm: GbmParams | None = RANKER_GBM, l2: float = L2,
               names: tuple[str, ...] = FEATURE_NAMES) -> Logistic | Boosted | None:
    if not xs:
        return None
    sizes = np.array([len(x) for x in xs])
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    x = np.concatenate(xs)
    if gbm is None or len(xs) < MIN_EVENTS_FOR_TREES:
        return fit_conditional_logit(x, np.concatenate([starts, [len(x)]]), starts + np.array(pos), names, l2=l2)
    labels = np.zeros(len(x), dtype=np.float32)
    labels[starts + np.array(pos)] = 1.0
    return fit_lambdarank(x, labels, sizes, names, gbm, eval_at=3)


def train_ranker(settings: Settings, purchases: pd.DataFrame, until: datetime) -> Logistic | Boosted | None:
    return fit_ranker(*training_groups(settings, purchases, until))


def ranker_kind(ranker: Logistic | Boosted | None) -> str:
    if ranker is None:
        return "prior (no redemptions to learn from)"
    if isinstance(ranker, Boosted):
        return (f"LightGBM {RANKER_GBM.objective} ({RANKER_GBM.n_trees} trees x {RANKER_GBM.num_leaves} leaves, "
                f"learning rate {RANKER_GBM.learning_rate}) on monthly snapshots over {TRAIN_DAYS} days")
    return "conditional logit (too few redemptions for trees)"


def prior_ranker() -> Logistic:
    """Used when there are no redemptions to learn from (a small slice): affinity first, then popularity."""
    w = np.zeros(len(FEATURE_NAMES))
    w[FEATURE_NAMES.index("log_affinity_decayed")] = 1.0
    w[FEATURE_NAMES.index("redeemed_before")] = 1.0
    w[FEATURE_NAMES.index("log_product_buyers")] = 0.1
    n = len(FEATURE_NAMES)
    return Logistic(FEATURE_NAMES, np.zeros(n), np.ones(n), w, 0.0)


def train_and_save(settings: Settings, purchases: pd.DataFrame, until: datetime, staging: Path,
                   timer: Timer) -> tuple[dict[str, Any], dict[str, Any]]:
    with timer.step("next_best_action: ranker (redemptions before the cut)"):
        ranker = train_ranker(settings, purchases, until)
        kind = ranker_kind(ranker)
        ranker = ranker or prior_ranker()
    with timer.step("next_best_action: point-in-time tables at the cut"):
        t = build_tables(settings, purchases, until)
    with timer.step("next_best_action: ONNX export + registry"):
        for name in FIELDS:
            np.save(staging / f"{name}.npy", np.ascontiguousarray(getattr(t, name)), allow_pickle=False)
        np.save(staging / "ref_day.npy", np.array([t.ref_day]))
        (staging / "model.onnx").write_bytes(ranker.onnx("next_best_action_ranker"))
        parity = ranker_parity((staging / "model.onnx").read_bytes(), ranker, parity_rows(t))
        if parity > PARITY_TOLERANCE:
            raise ModelError(f"NBA ranker ONNX parity failed: max abs diff {parity:.2e} > {PARITY_TOLERANCE}")
    return ({"train_days": TRAIN_DAYS, "snapshot_days": SNAPSHOT_DAYS, "ranker": kind, "weights": ranker.params()},
            {"onnx_parity_max_abs_diff": parity, "coupons": len(t.coupons)})


def parity_rows(t: Tables, n_customers: int = 32) -> np.ndarray:
    """Real candidate rows (tree thresholds sit where the data is) plus random ones, for the ONNX parity check."""
    rows = [np.random.default_rng(0).normal(size=(256, len(FEATURE_NAMES))).astype(np.float32)]
    day = t.ref_day
    for c in t.customers[:: max(len(t.customers) // n_customers, 1)]:
        cpn, camp = candidates(t, int(c), t.campaigns, day)
        if len(cpn):
            rows.append(features(t, int(c), cpn, camp, day))
    return np.concatenate(rows)
