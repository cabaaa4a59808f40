"""Next best action: rank the coupons of a customer's active, approved campaigns by redemption likelihood.

Features of a (customer, coupon, day) are taken as of a cut (point in time: purchases and redemptions strictly
before it) plus the campaign's calendar on the day. The ranker is LightGBM lambdarank (ONNX via onnxmltools,
training/gbm.py) trained on the redemptions of monthly snapshots over [until - TRAIN_DAYS, until), each with
features as of its snapshot (the candidates of each redemption = the coupons of the customer's campaigns active
that day); a conditional logit when there are too few redemptions for trees (a small slice).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pantry import dataset
from pantry.scoring import ModelError
from pantry.settings import Settings
from training.data import BEFORE_EVENT, DAY_S, HALF_LIFE_DAYS, feature_log_present, historical_features, to_days
from training.gbm import Boosted, GbmParams, fit_lambdarank
from training.logistic import Logistic, fit_conditional_logit
from training.timing import Timer

PARITY_TOLERANCE = 1e-4  # = pipeline.PARITY_TOLERANCE (pipeline imports this module lazily)

TRAIN_DAYS = 120
SNAPSHOT_DAYS = 30
L2 = 30.0  # the logit's (small data only); chosen on the validation cut below
# Chosen on a validation cut before the test cut (train before 2017-09-01, score September; validate_nba_l2.py):
# shallow trees, slow learning rate; deeper or longer fits overfit the few hundred redemptions.
RANKER_GBM = GbmParams(objective="lambdarank", n_trees=100, num_leaves=7, learning_rate=0.05, min_child_samples=50)
MIN_EVENTS_FOR_TREES = 200
RECENT_DAYS = 28
FEATURE_NAMES = (
    "log_affinity",
    "log_affinity_decayed",
    "log_affinity_recent",
    "redeemed_before",
    "log_coupon_redemptions",
    "log_product_buyers",
    "log_n_products",
    "type_a",
    "type_b",
    "type_c",
    "log_days_since_start",
    "log_days_to_end",
    "log_customer_redemptions",
    "log_distinct_products_bought",
    "log_category_affinity",
    "affinity_share",
    # Relative to the other candidates of the same request (a customer's affinity means more next to their other
    # coupons than on an absolute scale): chosen on three validation cuts before the test cut (validate_nba.py).
    "affinity_rank",
    "affinity_decayed_vs_best",
    "affinity_vs_best",
    "affinity_share_rank",
    "product_buyers_vs_best",
    "log_coupon_redemption_rate",
)
N_ABSOLUTE = 16  # the first columns are per (customer, coupon); the rest are relative to the candidate list
# The customer's live repertoire (Feast, as of the day before each redemption) scored against each coupon. Measured
# on the validation cut it made the ranker worse (validate_nba_l2.py: hit@3 0.139 with vs 0.206 without), so the
# served ranker does not use it; `live=True` appends these columns for that comparison.
LIVE_FEATURE_NAMES = ("log_repertoire_score", "log_repertoire_products")
REPERTOIRE_FEATURES = ("customer_repertoire:repertoire_product_ids", "customer_repertoire:repertoire_scores")


@dataclass
class Tables:
    """Everything the ranker needs, as of one cut (arrays; CSR per customer / per campaign)."""

    ref_day: float
    coupons: np.ndarray  # sorted coupon_upc
    coupon_redemptions: np.ndarray  # float32 redemptions of the coupon before the cut (anyone)
    coupon_buyers: np.ndarray  # float32 distinct buyers of the coupon's products before the cut
    coupon_n_products: np.ndarray
    customers: np.ndarray  # sorted customer ids with any pair or enrolment
    pair_indptr: np.ndarray  # per customer: coupon idx with affinity/redeemed stats
    pair_coupon: np.ndarray
    pair_aff: np.ndarray
    pair_aff_decayed: np.ndarray
    pair_aff_recent: np.ndarray
    pair_redeemed: np.ndarray
    pair_distinct: np.ndarray  # distinct coupon products the customer bought
    pair_category: np.ndarray  # baskets with a product of the coupon's categories
    customer_baskets: np.ndarray  # float32 per customer
    customer_redemptions: np.ndarray
    enr_indptr: np.ndarray  # per customer: enrolled campaign ids
    enr_campaigns: np.ndarray
    campaigns: np.ndarray  # sorted campaign ids
    campaign_type: np.ndarray  # 0/1/2 = A/B/C
    campaign_start: np.ndarray  # days since epoch
    campaign_end: np.ndarray
    camp_indptr: np.ndarray  # per campaign: coupon idx
    camp_coupons: np.ndarray
    nudge_indptr: np.ndarray  # per customer: top products by decayed count (the buy-again nudge)
    nudge_products: np.ndarray
    nudge_counts: np.ndarray
    cpn_prod_indptr: np.ndarray  # per coupon idx: its product ids (sorted)
    cpn_products: np.ndarray


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


def _lookup(sorted_ids: np.ndarray, value: int) -> int:
    pos = int(np.searchsorted(sorted_ids, value))
    return pos if pos < len(sorted_ids) and int(sorted_ids[pos]) == value else -1


def candidates(t: Tables, customer_id: int, campaign_ids: np.ndarray, day: float) -> tuple[np.ndarray, np.ndarray]:
    """(coupon idx, campaign idx) pairs: coupons of the given campaigns the customer is enrolled in, active on
    `day`. A coupon in several of those campaigns appears once (its first campaign)."""
    u = _lookup(t.customers, customer_id)
    if u < 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    enrolled = t.enr_campaigns[t.enr_indptr[u] : t.enr_indptr[u + 1]]
    chosen = np.intersect1d(enrolled, campaign_ids)
    cpn, camp = [], []
    for c in chosen:
        ci = _lookup(t.campaigns, int(c))
        if ci < 0 or not (t.campaign_start[ci] <= day <= t.campaign_end[ci] + 1.0):
            continue
        items = t.camp_coupons[t.camp_indptr[ci] : t.camp_indptr[ci + 1]]
        cpn.append(items)
        camp.append(np.full(len(items), ci, dtype=np.int64))
    if not cpn:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    cpn_all, camp_all = np.concatenate(cpn), np.concatenate(camp)
    _uniq, first = np.unique(cpn_all, return_index=True)
    first = np.sort(first)
    return cpn_all[first], camp_all[first]


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


def features(t: Tables, customer_id: int, coupon_idx: np.ndarray, campaign_idx: np.ndarray, day: float) -> np.ndarray:
    out = np.zeros((len(coupon_idx), len(FEATURE_NAMES)), dtype=np.float32)
    u = _lookup(t.customers, customer_id)
    if u >= 0:
        sl = slice(t.pair_indptr[u], t.pair_indptr[u + 1])
        have = t.pair_coupon[sl]
        pos = np.clip(np.searchsorted(have, coupon_idx), 0, max(len(have) - 1, 0))
        hit = (have[pos] == coupon_idx) if len(have) else np.zeros(len(coupon_idx), dtype=bool)
        for col, arr in ((0, t.pair_aff), (1, t.pair_aff_decayed), (2, t.pair_aff_recent), (3, t.pair_redeemed),
                         (13, t.pair_distinct), (14, t.pair_category)):
            vals = arr[sl][pos] if len(have) else np.zeros(len(coupon_idx))
            out[:, col] = np.where(hit, vals > 0 if col == 3 else np.log1p(vals), 0.0)
        out[:, 12] = np.log1p(t.customer_redemptions[u])
        out[:, 15] = np.expm1(out[:, 0]) / max(float(t.customer_baskets[u]), 1.0)
    out[:, 4] = np.log1p(t.coupon_redemptions[coupon_idx])
    out[:, 5] = np.log1p(t.coupon_buyers[coupon_idx])
    out[:, 6] = np.log1p(t.coupon_n_products[coupon_idx])
    ctype = t.campaign_type[campaign_idx]
    out[:, 7], out[:, 8], out[:, 9] = ctype == 0, ctype == 1, ctype == 2
    out[:, 10] = np.log1p(np.maximum(day - t.campaign_start[campaign_idx], 0.0))
    out[:, 11] = np.log1p(np.maximum(t.campaign_end[campaign_idx] - day, 0.0))
    relative_columns(out)
    return out


def _rank_desc(values: np.ndarray) -> np.ndarray:
    """0 for the largest value, ties in candidate order (stable), as the served ranking breaks them."""
    return np.argsort(np.argsort(-values, kind="stable"), kind="stable").astype(np.float32)


def relative_columns(out: np.ndarray) -> None:
    """Fill the columns after N_ABSOLUTE from the absolute ones of the same candidate list (in place)."""
    if len(out) == 0:
        return
    aff, dec, share, buyers = out[:, 0], out[:, 1], out[:, 15], out[:, 5]
    out[:, 16] = np.log1p(_rank_desc(dec))
    out[:, 17] = dec - dec.max()
    out[:, 18] = aff - aff.max()
    out[:, 19] = np.log1p(_rank_desc(share))
    out[:, 20] = buyers - buyers.max()
    # redemptions per buyer of the coupon's products (x100): how readily its buyers use it
    out[:, 21] = np.log1p(np.expm1(out[:, 4]) / (np.expm1(buyers) + 1.0) * 100.0)


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
        target = _lookup(t.coupons, int(row.coupon_upc))
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


FIELDS = tuple(f for f in Tables.__dataclass_fields__ if f != "ref_day")


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
        from training.onnx_export import session

        x = parity_rows(t)
        onnx_logit = session((staging / "model.onnx").read_bytes()).run(["logit"], {"features": x})[0][:, 0]
        parity = float(np.max(np.abs(onnx_logit - ranker.logit(x))))
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


def load_tables(directory: Path) -> Tables:
    arrays = {name: np.load(directory / f"{name}.npy", allow_pickle=False) for name in FIELDS}
    return Tables(ref_day=float(np.load(directory / "ref_day.npy")[0]), **arrays)


# ---- evaluation (protocol: cut 2017-10-01, every redemption after it) -----------------------------------------


def evaluate_nba(settings: Settings, purchases: pd.DataFrame, scratch: Path, timer: Timer) -> dict[str, Any]:
    from training.evaluate import NBA_CUT

    with timer.step("next_best_action eval: train + tables at the cut"):
        ranker = train_ranker(settings, purchases[purchases["day"] < to_days(NBA_CUT)], NBA_CUT) or prior_ranker()
        t = build_tables(settings, purchases, NBA_CUT)
    events = redemption_events(settings, NBA_CUT, None)
    rng = np.random.default_rng(0)
    names = ("model (served ranker)", "random", "past-purchase affinity", "coupon product popularity",
             "redeemed-before, then affinity")
    hits = dict.fromkeys(names, 0.0)
    sizes = []
    with timer.step("next_best_action eval: rank redemptions"):
        # events without candidates or whose coupon is not among them still count: a miss for every method
        sets = [(x, target) for _row, _cpn, _camp, x, target in event_sets(t, events)
                if x is not None and target >= 0]
        logits = ranker.logit(np.concatenate([x for x, _t in sets])) if sets else np.empty(0)
        offsets = np.cumsum([0] + [len(x) for x, _t in sets])
        for (x, target), lo, hi in zip(sets, offsets[:-1], offsets[1:], strict=True):
            sizes.append(len(x))
            orders = {
                "model (served ranker)": np.argsort(-logits[lo:hi], kind="stable"),
                "random": rng.permutation(len(x)),
                "past-purchase affinity": np.lexsort((-x[:, 5], -x[:, 1])),
                "coupon product popularity": np.argsort(-x[:, 5], kind="stable"),
                "redeemed-before, then affinity": np.lexsort((-x[:, 5], -x[:, 1], -x[:, 3])),
            }
            for name, order in orders.items():
                hits[name] += float(target in order[:3])
    n = len(events)
    return {
        "cut": NBA_CUT.isoformat(),
        "events": n,
        "events_with_candidates": len(sizes),
        "median_candidates": float(np.median(sizes)) if sizes else 0.0,
        "hit@3": {k: v / max(n, 1) for k, v in hits.items()},
        "ranker": ranker_kind(ranker),
        "weights": ranker.params(),
    }
