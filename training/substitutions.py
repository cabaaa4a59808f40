"""Fitting the substitution model: given a customer's usual item, rank the items of its type they would take.

Training data = departures before the cut: with an inner cut `until - SWITCH_DAYS`, a customer's *usual item* of a
product type is their most bought item of that type (bought >= 2 times before the inner cut); a *departure* is the
first purchase in [inner cut, until) of another item of that type, bought before or not (`switch_events` with
`new_only=False`; the report's new-item protocol keeps only never-bought ones). Candidates = what serving ranks: the
type's pool (top POOL by buyers) plus the customer's own other items of the type (`own_items_at`, the history a
version keeps of each customer); label = the item chosen. Several such windows are stacked (WINDOWS, each with its
own ALS fit at its inner cut); the substitutions shoppers accepted in live traffic within a window (the event
archive's `substitution_feedback`, `feedback_events`) join its departures as events labelled by the shopper. The
ranker is LightGBM lambdarank over each event's candidates (ONNX via
onnxmltools, training/gbm.py); a conditional logit when there are too few events for trees (a small slice).

Besides similarity, popularity, brand/size/price closeness and the customer's own history in the type (bought or
not, its share of the type, its rank among their items), the ranker sees what other customers with the same
usual item did before the cut (`PairTable`): how many of them also bought the candidate, and how many tried it after
their usual one. The catalogue's tables are built here; the pools and candidate features are
pantry/models/substitutions.py's, the code serving ranks with.
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
from pantry.models.onnx import session
from pantry.models.recommender_candidates import LABEL_DAYS
from pantry.models.substitution_features import (
    ARRAYS,
    FEATURE_NAMES,
    NO_OWN_ITEMS,
    POOL,
    SCORED_POOL,
    SERVED_POOL_MIN_BUYERS,
    Catalogue,
    OwnItems,
    features,
    ordered_pools,
    own_candidates,
    pool,
    pool_arrays,
)
from pantry.scoring import ModelError
from pantry.settings import Settings
from training import als
from training.data import HALF_LIFE_DAYS, Index, substitution_feedback, to_days
from training.gbm import Boosted, GbmParams, fit_lambdarank
from training.logistic import Logistic, fit_conditional_logit
from training.onnx_export import PARITY_TOLERANCE, ranker_parity
from training.recommender import fit_als_at
from training.timing import Timer

SWITCH_DAYS = LABEL_DAYS  # the first window shares the recommender re-ranker's ALS fit at the inner cut
WINDOWS = 2  # stacked departure windows [until - w * SWITCH_DAYS, until - (w - 1) * SWITCH_DAYS)
NEW_BUYER_DAYS = 28
MIN_EVENTS_FOR_TREES = 500  # fewer switch events (a small slice): a conditional logit, trees would only memorise
# Chosen on a validation cut before the test cut (train before 2017-09-01, score Sep-Oct;
# experiments/substitution_ranker.py).
RANKER_GBM = GbmParams(objective="lambdarank", n_trees=100, num_leaves=15, learning_rate=0.1)
# Departures the ranker learns from per window, a seeded sample (a full-data window has ~16,000): on the validation
# cut a quarter of them gave the same hit@3 (0.516 any departure, 0.223 vs 0.225 new item) with a fit of 10.7 s
# instead of 36.7 s (experiments/substitution_training_budget.py); the retrain has a 120 s budget.
RANKER_EVENTS_PER_WINDOW = 4_000
# Accepted substitutions of live traffic per window, a seeded sample: they are labels the shopper gave, so all of a
# month of the simulated chain's (15,544 in November) are kept, but a larger chain's would grow the fit without bound
# (the ranker step took 45.4 s with those 15,544 against ~10 s without: docs/DECISIONS.md).
RANKER_FEEDBACK_PER_WINDOW = 16_000


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


def usual_items(first: pd.DataFrame) -> pd.DataFrame:
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
    usual = usual_items(typed)
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


@dataclass
class SwitchEvents:
    customers: np.ndarray  # customer ids
    usual: np.ndarray  # item index of the usual item
    chosen: np.ndarray  # item index of the chosen item (-1 when unknown to the model)
    bought: list[np.ndarray]  # item indices the customer bought of that type before the cut
    store_id: np.ndarray  # store of the switch purchase
    day: np.ndarray  # float days since the epoch of the switch purchase

    def sample(self, n: int, seed: int = 0) -> SwitchEvents:
        """At most n of the events, drawn without replacement (seeded), in their order."""
        if len(self.customers) <= n:
            return self
        keep = np.sort(np.random.default_rng(seed).choice(len(self.customers), size=n, replace=False))
        return SwitchEvents(self.customers[keep], self.usual[keep], self.chosen[keep],
                            [self.bought[j] for j in keep], self.store_id[keep], self.day[keep])

    def __add__(self, other: SwitchEvents) -> SwitchEvents:
        return SwitchEvents(np.concatenate([self.customers, other.customers]),
                            np.concatenate([self.usual, other.usual]), np.concatenate([self.chosen, other.chosen]),
                            self.bought + other.bought, np.concatenate([self.store_id, other.store_id]),
                            np.concatenate([self.day, other.day]))


def feedback_events(feedback: pd.DataFrame, index: Index, start: datetime, end: datetime) -> SwitchEvents:
    """Accepted substitutions of live traffic (training.data.substitution_feedback) in [start, end) as switch events:
    the shopper was offered `substitute_product_id` for `original_product_id` and took it, a label given by the
    shopper rather than read off the purchases. A rejection is not one: the ranker learns which candidate of a group
    was chosen, and a rejected offer names none (serving hears rejections through the substitution feedback views)."""
    fb = feedback[feedback["accepted"].fillna(False).astype(bool) & feedback["customer_id"].notna()
                  & (feedback["day"] >= to_days(start)) & (feedback["day"] < to_days(end))]
    usual = index.item_idx(fb["original_product_id"].to_numpy(np.int64))
    chosen = index.item_idx(fb["substitute_product_id"].to_numpy(np.int64))
    known = usual >= 0
    fb, usual, chosen = fb[known], usual[known], chosen[known]
    return SwitchEvents(fb["customer_id"].to_numpy(np.int64), usual, chosen, [np.empty(0, np.int64)] * len(fb),
                        fb["store_id"].fillna(-1).to_numpy(np.int64), fb["day"].to_numpy(np.float64))


def switch_events(settings: Settings, before: pd.DataFrame, after: pd.DataFrame, index: Index,
                  new_only: bool = True) -> SwitchEvents:
    """The protocol's switch events: usual item (most bought of its type, >= 2 baskets before the cut) -> the
    first purchase after the cut of an item of that type never bought before. Items new to the catalogue after the
    cut keep chosen = -1 (every model misses them, they still count). `new_only=False`: the first purchase of the
    type other than the usual item, bought before or not (any departure from the usual item)."""
    products = dataset.read_table(settings, "products")[["product_id", "product_type"]].dropna()
    b = before[["customer_id", "product_id", "basket_id"]].drop_duplicates().merge(products, on="product_id")
    counts = b.groupby(["customer_id", "product_type", "product_id"]).size().reset_index(name="n")
    counts = counts.sort_values(["customer_id", "product_type", "n", "product_id"],
                                ascending=[True, True, False, True])
    usual = counts.drop_duplicates(["customer_id", "product_type"])
    usual = usual[usual["n"] >= 2].rename(columns={"product_id": "usual"})[["customer_id", "product_type", "usual"]]
    a = after.sort_values("day", kind="stable")[["customer_id", "product_id", "store_id", "day"]]
    a = a.merge(products, on="product_id")
    a = a.merge(usual, on=["customer_id", "product_type"])
    seen = counts[["customer_id", "product_type", "product_id"]].assign(seen=True)
    a = a.merge(seen, on=["customer_id", "product_type", "product_id"], how="left")
    departed = a["seen"].isna() if new_only else a["product_id"] != a["usual"]
    first = a[departed].drop_duplicates(["customer_id", "product_type"], keep="first")
    # what each event's customer bought of its type before the cut (only the events' pairs: a groupby-apply over
    # every (customer, type) pair took ~25 s of the retrain)
    pairs = first[["customer_id", "product_type"]].assign(ev=np.arange(len(first)))
    had = counts[["customer_id", "product_type", "product_id"]].merge(pairs, on=["customer_id", "product_type"])
    had = had.assign(i=index.item_idx(had["product_id"].to_numpy())).sort_values(["ev", "i"], kind="stable")
    bounds = np.searchsorted(had["ev"].to_numpy(), np.arange(len(first) + 1))
    items = had["i"].to_numpy(np.int64)
    bought = [items[lo:hi] for lo, hi in pairwise(bounds)]
    return SwitchEvents(first["customer_id"].to_numpy(np.int64), index.item_idx(first["usual"].to_numpy()),
                        index.item_idx(first["product_id"].to_numpy()), bought, first["store_id"].to_numpy(np.int64),
                        first["day"].to_numpy(np.float64))


def own_items_at(before: pd.DataFrame, index: Index, until: datetime) -> dict[int, OwnItems]:
    """Per customer, every item bought before `until` with its purchase lines decayed with a HALF_LIFE_DAYS
    half-life to `until` (what a version keeps of each customer: pantry/models/substitutions.py OwnItems)."""
    if before.empty:
        return {}
    ref = to_days(until)
    lines = before[["customer_id", "product_id", "day"]]
    lines = lines.assign(w=np.power(0.5, (ref - lines["day"].to_numpy()) / HALF_LIFE_DAYS))
    g = lines.groupby(["customer_id", "product_id"])["w"].sum().reset_index()
    g = g.assign(i=index.item_idx(g["product_id"].to_numpy()))
    g = g[g["i"] >= 0].sort_values(["customer_id", "w", "i"], ascending=[True, False, True], kind="stable")
    cust = g["customer_id"].to_numpy()
    bounds = np.flatnonzero(np.diff(cust)) + 1
    items, scores = g["i"].to_numpy(np.int64), g["w"].to_numpy(np.float64)
    return {int(cust[lo]): OwnItems(items[lo:hi], scores[lo:hi])
            for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(cust)], strict=True) if hi > lo}


def own_arrays(owns: dict[int, OwnItems], customers: np.ndarray) -> dict[str, np.ndarray]:
    """OwnItems as CSR rows over `customers` (a version's customers.npy order)."""
    rows = [owns.get(int(c), NO_OWN_ITEMS) for c in customers]
    indptr = np.concatenate([[0], np.cumsum([len(r.items) for r in rows])]).astype(np.int64)
    items = np.concatenate([r.items for r in rows]) if rows else np.empty(0)
    scores = np.concatenate([r.scores for r in rows]) if rows else np.empty(0)
    return {"own_indptr": indptr, "own_items": items.astype(np.int32), "own_scores": scores.astype(np.float32)}


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
               user_factors: np.ndarray | None, units: dict[int, np.ndarray],
               owns: dict[int, OwnItems] | None = None, exclude_bought: bool = True):
    """Per event: candidates and their features. `exclude_bought` (the new-item protocol): the pool minus the usual
    item and what the customer already bought; otherwise (what serving ranks) the pool plus the customer's own
    other items of the type (`owns`, the repertoire rows as of the cut)."""
    for j in range(len(ev.customers)):
        usual = int(ev.usual[j])
        own = (owns or {}).get(int(ev.customers[j]), NO_OWN_ITEMS)
        cands = pool(cat, usual)
        if exclude_bought:
            cands = cands[~np.isin(cands, ev.bought[j])]
        else:
            pooled = set(cands.tolist())
            mine = [m for m in own_candidates(cat, usual, own).tolist() if m not in pooled]
            cands = np.concatenate([cands, np.asarray(mine, dtype=cands.dtype)])
        if len(cands) == 0:
            yield j, cands, None
            continue
        uf = None
        if user_index is not None and user_factors is not None:
            u = user_index.user_idx(np.array([ev.customers[j]]))[0]
            uf = user_factors[u] if u >= 0 else None
        share = float(shares.get(int(ev.customers[j]), 0.2))
        su = units.get(int(ev.store_id[j]))
        yield j, cands, features(cat, usual, cands, share, uf,
                                 su[cands] if su is not None else np.zeros(len(cands), dtype=np.float32), own)


def fit_at(settings: Settings, purchases: pd.DataFrame, cut: datetime, params: als.AlsParams,
           pool_size: int = SCORED_POOL):
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
               params: als.AlsParams, feedback: pd.DataFrame | None = None) -> tuple[list[np.ndarray], list[int]]:
    """Switch events in [start, end) with everything as of `start`: (feature blocks, chosen row per block); the
    accepted substitutions of live traffic in the window (`feedback`, at most RANKER_FEEDBACK_PER_WINDOW) join the
    sampled departures."""
    before, index, uf, cat = fit_at(settings, purchases, start, params)
    after = purchases[(purchases["day"] >= to_days(start)) & (purchases["day"] < to_days(end))]
    ev = switch_events(settings, before, after, index, new_only=False).sample(RANKER_EVENTS_PER_WINDOW)
    if feedback is not None and len(feedback):
        ev = ev + feedback_events(feedback, index, start, end).sample(RANKER_FEEDBACK_PER_WINDOW)
    shares = private_share(before, index, cat)
    owns = own_items_at(before, index, start)
    xs, pos = [], []
    for j, cands, x in event_rows(cat, ev, shares, index, uf, store_units(before, index), owns, exclude_bought=False):
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
    feedback = substitution_feedback(settings, until)  # live traffic's verdicts (the event archive): labels
    for w in range(1, windows + 1):
        start = until - timedelta(days=w * SWITCH_DAYS)
        wx, wp = window_set(settings, purchases, start, start + timedelta(days=SWITCH_DAYS), params, feedback)
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


def ranker_kind(ranker: Logistic | Boosted | None) -> str:
    if ranker is None:
        return "prior (no switch events to learn from)"
    if isinstance(ranker, Boosted):
        return (f"LightGBM {RANKER_GBM.objective} ({RANKER_GBM.n_trees} trees x {RANKER_GBM.num_leaves} leaves) "
                f"on up to {RANKER_EVENTS_PER_WINDOW:,} departures of each of {WINDOWS} stacked {SWITCH_DAYS}-day "
                f"windows")
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
    with timer.step("substitutions: ranker (departures before the cut)"):
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
        owns = own_items_at(before, fitted_rec.index, until)
        for name, arr in own_arrays(owns, fitted_rec.index.customers).items():
            np.save(staging / f"{name}.npy", arr, allow_pickle=False)
        (staging / "model.onnx").write_bytes(ranker.onnx("substitution_ranker"))
        parity = ranker_parity((staging / "model.onnx").read_bytes(), ranker, parity_rows(cat, shares))
        if parity > PARITY_TOLERANCE:
            raise ModelError(f"substitution ranker ONNX parity failed: max abs diff {parity:.2e} > {PARITY_TOLERANCE}")
    with timer.step("substitutions: served pools (by the exported ranker)"):
        ranker_session = session((staging / "model.onnx").read_bytes())
        often = np.flatnonzero(cat.buyers >= SERVED_POOL_MIN_BUYERS)
        ordered = ordered_pools(cat, lambda x: ranker_session.run(["logit"], {"features": x})[0][:, 0], often)
        pools = [np.empty(0, dtype=np.int64)] * len(cat.products)
        for i, best in zip(often.tolist(), ordered, strict=True):
            pools[i] = best
        for name, arr in pool_arrays(pools).items():
            np.save(staging / f"{name}.npy", arr, allow_pickle=False)
    return ({"pool": POOL, "switch_days": SWITCH_DAYS, "windows": WINDOWS, "ranker": kind,
             "feature_names": list(FEATURE_NAMES), "repertoire_bonus": 0.0,
             "served_pool_min_buyers": SERVED_POOL_MIN_BUYERS, "weights": ranker.params()},
            {"onnx_parity_max_abs_diff": parity, "products": len(cat.products)})
