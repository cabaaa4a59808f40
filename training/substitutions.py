"""Substitutions: given a customer's usual item, rank the items of the same product type they would switch to.

Training data = switch events before the cut (the evaluation protocol's definition, moved earlier): with an
inner cut `until - SWITCH_DAYS`, a customer's *usual item* of a product type is their most bought item of that
type (bought >= 2 times before the inner cut); a *switch* is the first purchase in [inner cut, until) of an item
of that type they never bought before. Candidates = the type's pool (top POOL by buyers) minus the usual item
and what they already bought; label = the item chosen. Several such windows are stacked (WINDOWS, each with its
own ALS fit at its inner cut). The ranker is LightGBM lambdarank over each event's candidates (ONNX via
onnxmltools, training/gbm.py); a conditional logit when there are too few events for trees (a small slice).

Besides similarity, popularity, brand/size/price closeness and the customer's own history, the ranker sees what
other customers with the same usual item did before the cut (`PairTable`): how many of them also bought the
candidate, and how many tried it after their usual one (a "switch" in history).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pantry import dataset
from pantry.scoring import ModelError
from pantry.settings import Settings
from training import als
from training.data import Index, to_days
from training.gbm import Boosted, GbmParams, fit_lambdarank
from training.logistic import Logistic, fit_conditional_logit
from training.timing import Timer

PARITY_TOLERANCE = 1e-4  # = pipeline.PARITY_TOLERANCE (pipeline imports this module lazily)

POOL = 50
# What `candidate_pool` scores before returning its POOL best (serving reads the stock of only the first 20 it
# returns): the ranker on rows without a customer or store (`neutral_rows`). On the validation cut, ranking only
# the first 20 by buyers lost 0.005 hit@3 against the whole pool; the first 20 of 150 by that score lost nothing.
SCORED_POOL = 150
SERVED_READS = 20  # = serving/controllers/substitutions.py MAX_POOL: candidates whose stock serving reads
SWITCH_DAYS = 35  # = recommender.LABEL_DAYS: the first window shares the re-ranker's ALS fit at the inner cut
WINDOWS = 2  # stacked switch windows [until - w * SWITCH_DAYS, until - (w - 1) * SWITCH_DAYS)
NEW_BUYER_DAYS = 28
MIN_EVENTS_FOR_TREES = 500  # fewer switch events (a small slice): a conditional logit, trees would only memorise
# Chosen on a validation cut before the test cut (train before 2017-09-01, score Sep-Oct; docs/MODEL_REPORT.md).
RANKER_GBM = GbmParams(objective="lambdarank", n_trees=100, num_leaves=15, learning_rate=0.1)
FEATURE_NAMES = (
    "als_similarity",
    "log_buyers",
    "log_pool_rank",
    "same_brand_kind",
    "same_manufacturer",
    "same_size",
    "abs_log_price_ratio",
    "log_price_ratio",
    "customer_brand_kind_share",
    "customer_affinity",
    "same_type",
    "log_store_units_28d",
    "log_recent_buyers",
    "log_switch",
    "log_co_buyers",
    "switch_rate",
    "co_rate",
    "log_new_buyers",
    "log_item_age",
)


@dataclass
class Catalogue:
    """Item-level tables over the products bought before the cut (index = Index.products)."""

    products: np.ndarray
    type_code: np.ndarray  # int64, -1 unknown
    category_code: np.ndarray
    private: np.ndarray  # float32 1 = private label
    manufacturer: np.ndarray  # int64
    size_code: np.ndarray  # int64, -1 unknown
    log_price: np.ndarray  # float32 mean log unit price
    buyers: np.ndarray  # float32 distinct customers
    recent_buyers: np.ndarray  # float32 distinct customers in the last 28 days
    factors: np.ndarray  # float32 L2-normalised ALS item factors
    pool_indptr: np.ndarray  # per type code: items by buyers, best first
    pool_items: np.ndarray
    cat_indptr: np.ndarray  # per category code
    cat_items: np.ndarray
    pair_key: np.ndarray  # int64 sorted usual * n_items + candidate (PairTable, flattened)
    pair_co: np.ndarray  # float32 customers with that usual item who also bought the candidate
    pair_switch: np.ndarray  # float32 ... whose first purchase of the candidate came after the usual one's
    usual_customers: np.ndarray  # float32 per item: customers whose usual item (of its type) it is
    new_buyers: np.ndarray  # float32 per item: customers who bought it for the first time in the last 28 days
    item_age: np.ndarray  # float32 per item: days between its first sale and the cut


def _codes(values: pd.Series) -> np.ndarray:
    codes, _uniques = pd.factorize(values, use_na_sentinel=True)
    return codes.astype(np.int64)


def _pools(codes: np.ndarray, buyers: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
    n_codes = int(codes.max()) + 1 if len(codes) and codes.max() >= 0 else 0
    order = np.lexsort((-buyers, codes))  # by code, then most buyers first
    order = order[codes[order] >= 0]
    indptr = np.zeros(n_codes + 1, dtype=np.int64)
    items: list[np.ndarray] = []
    for c in range(n_codes):
        lo, hi = np.searchsorted(codes[order], [c, c + 1])
        chunk = order[lo:hi][:limit]
        items.append(chunk)
        indptr[c + 1] = indptr[c] + len(chunk)
    return indptr, (np.concatenate(items) if items else np.empty(0, dtype=np.int64)).astype(np.int64)


def _usual_items(first: pd.DataFrame) -> pd.DataFrame:
    """Per (customer, type): the most bought item (>= 2 baskets, ties by product id) = the protocol's usual item."""
    ordered = first.sort_values(["customer_id", "t", "n", "product_id"], ascending=[True, True, False, True])
    usual = ordered.drop_duplicates(["customer_id", "t"])
    return usual[usual["n"] >= 2][["customer_id", "t", "i", "first"]].rename(columns={"i": "u", "first": "fu"})


def pair_table(before: pd.DataFrame, index: Index, type_code: np.ndarray) -> dict[str, np.ndarray]:
    """What customers with the same usual item did, from purchases before the cut: for (usual, candidate) of one
    type, the customers who also bought the candidate (co) and those who first bought it after the usual (switch).
    Also per item: customers whose usual item it is, first-time buyers in the last NEW_BUYER_DAYS, age."""
    n = len(index.products)
    first = before.groupby(["customer_id", "product_id"]).agg(n=("basket_id", "nunique"), first=("day", "min"))
    first = first.reset_index()
    first["i"] = index.item_idx(first["product_id"].to_numpy())
    first = first[first["i"] >= 0]
    first["t"] = type_code[first["i"].to_numpy()]
    typed = first[first["t"] >= 0]
    usual = _usual_items(typed)
    m = typed.merge(usual, on=["customer_id", "t"])
    m = m[m["i"] != m["u"]]
    m = m.assign(after=(m["first"] > m["fu"]).astype(np.float32))
    agg = m.groupby(["u", "i"]).agg(co=("after", "size"), sw=("after", "sum")).reset_index()
    key = agg["u"].to_numpy(np.int64) * n + agg["i"].to_numpy(np.int64)
    order = np.argsort(key, kind="stable")
    usual_customers = np.bincount(usual["u"].to_numpy(np.int64), minlength=n).astype(np.float32)
    ref = float(before["day"].max()) if len(before) else 0.0
    new = first[first["first"] >= ref - NEW_BUYER_DAYS]["i"].to_numpy(np.int64)
    first_sale = first.groupby("i")["first"].min()
    age = np.zeros(n, dtype=np.float32)
    age[first_sale.index.to_numpy()] = ref - first_sale.to_numpy()
    return {
        "pair_key": key[order],
        "pair_co": agg["co"].to_numpy(np.float32)[order],
        "pair_switch": agg["sw"].to_numpy(np.float32)[order],
        "usual_customers": usual_customers,
        "new_buyers": np.bincount(new, minlength=n).astype(np.float32),
        "item_age": age,
    }


def build_catalogue(settings: Settings, before: pd.DataFrame, index: Index, item_factors: np.ndarray,
                    pool_size: int = SCORED_POOL) -> Catalogue:
    products = dataset.read_table(settings, "products").set_index("product_id")
    meta = products.reindex(index.products)
    buyers = before.groupby("product_id")["customer_id"].nunique().reindex(index.products).fillna(0).to_numpy()
    recent = before[before["day"] >= before["day"].max() - 28]
    recent_buyers = recent.groupby("product_id")["customer_id"].nunique().reindex(index.products).fillna(0)
    qty = before["quantity"].clip(lower=1)
    unit = np.log(np.maximum(before["sales_value"].to_numpy() / qty.to_numpy(), 0.01))
    price = pd.Series(unit).groupby(before["product_id"].to_numpy()).mean().reindex(index.products).fillna(0.0)
    norms = np.linalg.norm(item_factors, axis=1, keepdims=True)
    type_code = _codes(meta["product_type"])
    cat_code = _codes(meta["category"])
    t_ptr, t_items = _pools(type_code, buyers, pool_size + 1)
    c_ptr, c_items = _pools(cat_code, buyers, pool_size + 1)
    return Catalogue(
        products=index.products,
        type_code=type_code,
        category_code=cat_code,
        private=(meta["brand"] == "Private").to_numpy(dtype=np.float32),
        manufacturer=meta["manufacturer_id"].fillna(-1).to_numpy(dtype=np.int64),
        size_code=_codes(meta["package_size"]),
        log_price=price.to_numpy(dtype=np.float32),
        buyers=buyers.astype(np.float32),
        recent_buyers=recent_buyers.to_numpy(dtype=np.float32),
        factors=(item_factors / np.maximum(norms, 1e-9)).astype(np.float32),
        pool_indptr=t_ptr, pool_items=t_items, cat_indptr=c_ptr, cat_items=c_items,
        **pair_table(before, index, type_code),
    )


def pool(cat: Catalogue, item: int, size: int = POOL) -> np.ndarray:
    """Candidate item indices for item index `item`: same type (else same category), best first, bounded."""
    t = int(cat.type_code[item])
    if t >= 0:
        items = cat.pool_items[cat.pool_indptr[t] : cat.pool_indptr[t + 1]]
        items = items[items != item]
        if len(items) >= 2:
            return items[:size]
    c = int(cat.category_code[item])
    if c < 0:
        return np.empty(0, dtype=np.int64)
    items = cat.cat_items[cat.cat_indptr[c] : cat.cat_indptr[c + 1]]
    return items[items != item][:size]


def features(cat: Catalogue, usual: int, cands: np.ndarray, customer_private_share: float,
             user_factors: np.ndarray | None, store_units: np.ndarray) -> np.ndarray:
    """[len(cands), len(FEATURE_NAMES)] float32 for one (usual item, customer)."""
    out = np.empty((len(cands), len(FEATURE_NAMES)), dtype=np.float32)
    out[:, 0] = cat.factors[cands] @ cat.factors[usual]
    out[:, 1] = np.log1p(cat.buyers[cands])
    out[:, 2] = np.log1p(np.arange(len(cands)))  # pools are ordered by buyers
    out[:, 3] = cat.private[cands] == cat.private[usual]
    out[:, 4] = (cat.manufacturer[cands] == cat.manufacturer[usual]) & (cat.manufacturer[usual] >= 0)
    out[:, 5] = (cat.size_code[cands] == cat.size_code[usual]) & (cat.size_code[usual] >= 0)
    ratio = cat.log_price[cands] - cat.log_price[usual]
    out[:, 6] = np.abs(ratio)
    out[:, 7] = ratio
    out[:, 8] = np.where(cat.private[cands] > 0, customer_private_share, 1.0 - customer_private_share)
    out[:, 9] = 0.0 if user_factors is None else (cat.factors[cands] @ user_factors)
    out[:, 10] = cat.type_code[cands] == cat.type_code[usual]
    out[:, 11] = np.log1p(store_units)
    out[:, 12] = np.log1p(cat.recent_buyers[cands])
    key = np.int64(usual) * len(cat.products) + cands.astype(np.int64)
    pos = np.clip(np.searchsorted(cat.pair_key, key), 0, max(len(cat.pair_key) - 1, 0))
    hit = cat.pair_key[pos] == key if len(cat.pair_key) else np.zeros(len(cands), dtype=bool)
    co = np.where(hit, cat.pair_co[pos] if len(cat.pair_key) else 0.0, 0.0)
    switch = np.where(hit, cat.pair_switch[pos] if len(cat.pair_key) else 0.0, 0.0)
    n_usual = float(cat.usual_customers[usual]) + 1.0
    out[:, 13] = np.log1p(switch)
    out[:, 14] = np.log1p(co)
    out[:, 15] = switch / n_usual
    out[:, 16] = co / n_usual
    out[:, 17] = np.log1p(cat.new_buyers[cands])
    out[:, 18] = np.log1p(cat.item_age[cands])
    return out


def neutral_rows(cat: Catalogue, usual: int, cands: np.ndarray) -> np.ndarray:
    """Candidate rows as a request without a known customer or store sees them: what `candidate_pool` ranks by."""
    return features(cat, usual, cands, 0.5, None, np.zeros(len(cands), dtype=np.float32))


@dataclass
class SwitchEvents:
    customers: np.ndarray  # customer ids
    usual: np.ndarray  # item index of the usual item
    chosen: np.ndarray  # item index of the chosen item (-1 when unknown to the model)
    bought: list[np.ndarray]  # item indices the customer bought of that type before the cut
    store_id: np.ndarray  # store of the switch purchase


def switch_events(settings: Settings, before: pd.DataFrame, after: pd.DataFrame, index: Index) -> SwitchEvents:
    """The protocol's switch events: usual item (most bought of its type, >= 2 baskets before the cut) -> the
    first purchase after the cut of an item of that type never bought before. Items new to the catalogue after the
    cut keep chosen = -1 (every model misses them, they still count)."""
    products = dataset.read_table(settings, "products")[["product_id", "product_type"]].dropna()
    b = before[["customer_id", "product_id", "basket_id"]].drop_duplicates().merge(products, on="product_id")
    counts = b.groupby(["customer_id", "product_type", "product_id"]).size().reset_index(name="n")
    counts = counts.sort_values(["customer_id", "product_type", "n", "product_id"],
                                ascending=[True, True, False, True])
    usual = counts.drop_duplicates(["customer_id", "product_type"])
    usual = usual[usual["n"] >= 2].rename(columns={"product_id": "usual"})[["customer_id", "product_type", "usual"]]
    a = after.sort_values("day", kind="stable")[["customer_id", "product_id", "store_id"]]
    a = a.merge(products, on="product_id")
    a = a.merge(usual, on=["customer_id", "product_type"])
    seen = counts[["customer_id", "product_type", "product_id"]].assign(seen=True)
    a = a.merge(seen, on=["customer_id", "product_type", "product_id"], how="left")
    first = a[a["seen"].isna()].drop_duplicates(["customer_id", "product_type"], keep="first")
    # what each event's customer bought of its type before the cut (only the events' pairs: a groupby-apply over
    # every (customer, type) pair took ~25 s of the retrain)
    pairs = first[["customer_id", "product_type"]].assign(ev=np.arange(len(first)))
    had = counts[["customer_id", "product_type", "product_id"]].merge(pairs, on=["customer_id", "product_type"])
    had = had.assign(i=index.item_idx(had["product_id"].to_numpy())).sort_values(["ev", "i"], kind="stable")
    bounds = np.searchsorted(had["ev"].to_numpy(), np.arange(len(first) + 1))
    items = had["i"].to_numpy(np.int64)
    bought = [items[lo:hi] for lo, hi in pairwise(bounds)]
    return SwitchEvents(first["customer_id"].to_numpy(np.int64), index.item_idx(first["usual"].to_numpy()),
                        index.item_idx(first["product_id"].to_numpy()), bought, first["store_id"].to_numpy(np.int64))


def private_share(before: pd.DataFrame, index: Index, cat: Catalogue) -> pd.Series:
    i = index.item_idx(before["product_id"].to_numpy())
    priv = np.where(i >= 0, cat.private[np.maximum(i, 0)], 0.0)
    return pd.Series(priv).groupby(before["customer_id"].to_numpy()).mean()


def store_units(before: pd.DataFrame, index: Index, days: int = 28) -> dict[int, np.ndarray]:
    """store -> units per item index over the last `days` before the cut (what the live store_product view has)."""
    recent = before[before["day"] >= before["day"].max() - days]
    out: dict[int, np.ndarray] = {}
    n = len(index.products)
    for store, g in recent.groupby("store_id"):
        arr = np.zeros(n, dtype=np.float32)
        i = index.item_idx(g["product_id"].to_numpy())
        np.add.at(arr, i[i >= 0], 1.0)
        out[int(store)] = arr
    return out


def event_rows(cat: Catalogue, ev: SwitchEvents, shares: pd.Series, user_index: Index | None,
               user_factors: np.ndarray | None, units: dict[int, np.ndarray]):
    """Per event: candidates (pool minus usual and already bought) and their features."""
    for j in range(len(ev.customers)):
        cands = pool(cat, int(ev.usual[j]))
        cands = cands[~np.isin(cands, ev.bought[j])]
        if len(cands) == 0:
            yield j, cands, None
            continue
        uf = None
        if user_index is not None and user_factors is not None:
            u = user_index.user_idx(np.array([ev.customers[j]]))[0]
            uf = user_factors[u] if u >= 0 else None
        share = float(shares.get(int(ev.customers[j]), 0.2))
        su = units.get(int(ev.store_id[j]))
        yield j, cands, features(cat, int(ev.usual[j]), cands, share, uf,
                                 su[cands] if su is not None else np.zeros(len(cands), dtype=np.float32))


def _fit_at(settings: Settings, purchases: pd.DataFrame, cut: datetime, params: als.AlsParams,
            pool_size: int = SCORED_POOL):
    from training.recommender import fit_als_at

    before, index, _m, _model, uf, itf = fit_als_at(purchases, cut, params)
    cat = build_catalogue(settings, before, index, itf, pool_size)
    return before, index, uf, cat


def prior_ranker() -> Logistic:
    """Used when there are no switch events to learn from (a small slice): similarity, then popularity."""
    w = np.zeros(len(FEATURE_NAMES))
    w[FEATURE_NAMES.index("als_similarity")] = 1.0
    w[FEATURE_NAMES.index("log_buyers")] = 0.5
    w[FEATURE_NAMES.index("same_manufacturer")] = 0.2
    n = len(FEATURE_NAMES)
    return Logistic(FEATURE_NAMES, np.zeros(n), np.ones(n), w, 0.0)


def window_set(settings: Settings, purchases: pd.DataFrame, start: datetime, end: datetime,
               params: als.AlsParams) -> tuple[list[np.ndarray], list[int]]:
    """Switch events in [start, end) with everything as of `start`: (feature blocks, chosen row per block)."""
    before, index, uf, cat = _fit_at(settings, purchases, start, params)
    after = purchases[(purchases["day"] >= to_days(start)) & (purchases["day"] < to_days(end))]
    ev = switch_events(settings, before, after, index)
    shares = private_share(before, index, cat)
    xs, pos = [], []
    for j, cands, x in event_rows(cat, ev, shares, index, uf, store_units(before, index)):
        if x is None:
            continue
        hit = np.flatnonzero(cands == ev.chosen[j])
        if len(hit) == 0:
            continue  # the chosen item is outside the pool: nothing to learn about the order
        xs.append(x)
        pos.append(int(hit[0]))
    return xs, pos


def train_ranker(settings: Settings, purchases: pd.DataFrame, until: datetime, params: als.AlsParams,
                 windows: int = WINDOWS, gbm: GbmParams = RANKER_GBM) -> Logistic | Boosted | None:
    xs: list[np.ndarray] = []
    pos: list[int] = []
    for w in range(1, windows + 1):
        start = until - timedelta(days=w * SWITCH_DAYS)
        wx, wp = window_set(settings, purchases, start, start + timedelta(days=SWITCH_DAYS), params)
        xs += wx
        pos += wp
    if not xs:
        return None
    sizes = np.array([len(x) for x in xs])
    x = np.concatenate(xs)
    if len(xs) < MIN_EVENTS_FOR_TREES:
        ptr = np.concatenate([[0], np.cumsum(sizes)])
        return fit_conditional_logit(x, ptr, ptr[:-1] + np.array(pos), FEATURE_NAMES)
    labels = np.zeros(len(x), dtype=np.float32)
    labels[np.concatenate([[0], np.cumsum(sizes)[:-1]]) + np.array(pos)] = 1.0
    return fit_lambdarank(x, labels, sizes, FEATURE_NAMES, gbm, eval_at=3)


ARRAYS = ("products", "type_code", "category_code", "private", "manufacturer", "size_code", "log_price", "buyers",
          "recent_buyers", "factors", "pool_indptr", "pool_items", "cat_indptr", "cat_items", "pair_key", "pair_co",
          "pair_switch", "usual_customers", "new_buyers", "item_age")


def ranker_kind(ranker: Logistic | Boosted | None) -> str:
    if ranker is None:
        return "prior (no switch events to learn from)"
    if isinstance(ranker, Boosted):
        return (f"LightGBM {RANKER_GBM.objective} ({RANKER_GBM.n_trees} trees x {RANKER_GBM.num_leaves} leaves) "
                f"on {WINDOWS} stacked {SWITCH_DAYS}-day switch windows")
    return "conditional logit (too few switch events for trees)"


def parity_rows(cat: Catalogue, shares: pd.Series, n_items: int = 64) -> np.ndarray:
    """Real candidate rows (tree thresholds sit where the data is) plus random ones, for the ONNX parity check."""
    rng = np.random.default_rng(0)
    share = float(shares.mean()) if len(shares) else 0.2
    rows = [rng.normal(size=(256, len(FEATURE_NAMES))).astype(np.float32)]
    for usual in np.argsort(-cat.buyers)[:n_items]:
        cands = pool(cat, int(usual))
        if len(cands):
            rows.append(features(cat, int(usual), cands, share, None, np.zeros(len(cands), dtype=np.float32)))
    return np.concatenate(rows)


def train_and_save(settings: Settings, purchases: pd.DataFrame, until: datetime, fitted_rec, staging: Path,
                   timer: Timer, params: als.AlsParams | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    params = params or als.AlsParams()
    before = purchases[purchases["day"] < to_days(until)]
    with timer.step("substitutions: catalogue + pools"):
        cat = build_catalogue(settings, before, fitted_rec.index, fitted_rec.item_factors)
        shares = private_share(before, fitted_rec.index, cat)
    with timer.step("substitutions: ranker (switch events before the cut)"):
        ranker = train_ranker(settings, purchases, until, params)
        kind = ranker_kind(ranker)
        ranker = ranker or prior_ranker()
    with timer.step("substitutions: ONNX export + registry"):
        for name in ARRAYS:
            np.save(staging / f"{name}.npy", np.ascontiguousarray(getattr(cat, name)), allow_pickle=False)
        np.save(staging / "customers.npy", fitted_rec.index.customers)
        np.save(staging / "user_factors.npy", fitted_rec.user_factors)
        share = shares.reindex(fitted_rec.index.customers).fillna(0.2).to_numpy(np.float32)
        np.save(staging / "private_share.npy", share)
        (staging / "model.onnx").write_bytes(ranker.onnx("substitution_ranker"))
        from training.onnx_export import session

        x = parity_rows(cat, shares)
        onnx_logit = session((staging / "model.onnx").read_bytes()).run(["logit"], {"features": x})[0][:, 0]
        parity = float(np.max(np.abs(onnx_logit - ranker.logit(x))))
        if parity > PARITY_TOLERANCE:
            raise ModelError(f"substitution ranker ONNX parity failed: max abs diff {parity:.2e} > {PARITY_TOLERANCE}")
    return ({"pool": POOL, "switch_days": SWITCH_DAYS, "windows": WINDOWS, "ranker": kind,
             "weights": ranker.params()},
            {"onnx_parity_max_abs_diff": parity, "products": len(cat.products)})


# ---- evaluation (protocol: cut 2017-11-01, test = everything after) -------------------------------------------


def evaluate_substitutions(settings: Settings, purchases: pd.DataFrame, scratch: Path, timer: Timer) -> dict[str, Any]:
    from training.evaluate import SUB_CUT

    params = als.AlsParams()
    cut = to_days(SUB_CUT)
    with timer.step("substitutions eval: train at the cut"):
        before, index, uf, cat = _fit_at(settings, purchases, SUB_CUT, params)
        ranker = train_ranker(settings, purchases[purchases["day"] < cut], SUB_CUT, params) or prior_ranker()
    after = purchases[purchases["day"] >= cut]
    ev = switch_events(settings, before, after, index)
    shares = private_share(before, index, cat)
    units = store_units(before, index)
    hits = {"model (served ranker)": 0.0, "type popularity": 0.0, "ALS similarity + type popularity": 0.0}
    with timer.step("substitutions eval: rank switch events"):
        rows = [(j, cands, x) for j, cands, x in event_rows(cat, ev, shares, index, uf, units) if x is not None]
        logits = ranker.logit(np.concatenate([x for _j, _c, x in rows])) if rows else np.empty(0)
        offsets = np.cumsum([0] + [len(c) for _j, c, _x in rows])
        for (j, cands, x), lo, hi in zip(rows, offsets[:-1], offsets[1:], strict=True):
            target = ev.chosen[j]
            model_order = cands[np.argsort(-logits[lo:hi], kind="stable")]
            hits["model (served ranker)"] += float(target in model_order[:3])
            hits["type popularity"] += float(target in cands[:3])
            blend = x[:, 0] + 0.5 * (x[:, 1] / max(x[:, 1].max(), 1e-9))
            hits["ALS similarity + type popularity"] += float(target in cands[np.argsort(-blend, kind="stable")][:3])
        hits.update(served_reads_hits(cat, ev, shares, index, uf, units, ranker))
    n_events = len(ev.customers)
    return {
        "cut": SUB_CUT.isoformat(),
        "events": n_events,
        "events_with_item_new_to_catalogue": int((ev.chosen < 0).sum()),
        "hit@3": {k: v / max(n_events, 1) for k, v in hits.items()},
        "ranker": ranker_kind(ranker),
        "weights": ranker.params(),
    }


def served_reads_hits(cat: Catalogue, ev: SwitchEvents, shares: pd.Series, index: Index, uf: np.ndarray,
                      units: dict[int, np.ndarray], ranker: Logistic | Boosted) -> dict[str, float]:
    """hits@3 of the ranker when it sees only the SERVED_READS candidates serving reads (protocol exclusions
    applied after): the first by buyers (the pool order before the neutral ranking), or the first of
    `candidate_pool`'s order (SCORED_POOL items by the ranker on customer-neutral rows)."""
    by_buyers, neutral_first = [], []
    for j in range(len(ev.customers)):
        usual = int(ev.usual[j])
        scored = pool(cat, usual, SCORED_POOL)
        by_buyers.append(scored[:SERVED_READS])
        neutral_first.append(scored)
    sizes = [len(c) for c in neutral_first]
    neutral = ranker.logit(np.concatenate([neutral_rows(cat, int(ev.usual[j]), c)
                                           for j, c in enumerate(neutral_first) if len(c)])) if sum(sizes) else []
    lo = 0
    for j, c in enumerate(neutral_first):
        neutral_first[j] = c[np.argsort(-neutral[lo:lo + len(c)], kind="stable")][:POOL][:SERVED_READS]
        lo += len(c)
    names = {f"model, first {SERVED_READS} by buyers only": by_buyers,
             f"model, first {SERVED_READS} of the served pool only": neutral_first}
    out: dict[str, float] = {}
    for name, lists in names.items():
        blocks, cands_of = [], []
        for j, c in enumerate(lists):
            c = c[~np.isin(c, ev.bought[j])]
            cands_of.append(c)
            if len(c):
                u = index.user_idx(np.array([ev.customers[j]]))[0]
                su = units.get(int(ev.store_id[j]))
                blocks.append(features(cat, int(ev.usual[j]), c, float(shares.get(int(ev.customers[j]), 0.2)),
                                       uf[u] if u >= 0 else None,
                                       su[c] if su is not None else np.zeros(len(c), dtype=np.float32)))
        logits = ranker.logit(np.concatenate(blocks)) if blocks else np.empty(0)
        hits, lo = 0.0, 0
        for j, c in enumerate(cands_of):
            top = c[np.argsort(-logits[lo:lo + len(c)], kind="stable")][:3]
            hits += float(ev.chosen[j] in top)
            lo += len(c)
        out[name] = hits
    return out
