"""Which more features or candidates would raise the recommender's precision on validation cuts? (none kept)

Command: `PANTRY_DATA_DIR=... .venv/bin/python -m experiments.recommender_features [--seeds] [--cut=YYYY-MM-DD]
[experiment ...]` (`--seeds`: the mean over 3 LightGBM seeds; an experiment is a name of EXPERIMENTS or
TRANSFORMS, or several joined by `+`, e.g. `cand_cooc+cooc`); `... recommender_features coverage` prints how much of
the truth the candidate lists hold. The evaluation protocol moved one holdout back (default cut = test cut - 35 days,
truth = products bought in the 35 days after it), the re-ranker trained at the cut before that (the served recipe:
1,500 sampled customers). The candidate lists of both cuts are built once and cached (pickles in the temp dir), so
an experiment that adds feature columns or candidates refits only the re-ranker. Prints for_you and discover
precision@10 and the never-bought popularity baseline.

Result (recorded in docs/MODEL_REPORT.md when run; for_you / discover, never-bought popularity 0.0343 / 0.0350):
cut 2017-10-22: served 0.3943 / 0.0518; item-item co-purchase columns (`cooc`, experiments/item_similarity.py)
0.3945 / 0.0555; the same plus 30 never-bought candidates from it 0.3947 / 0.0554; product type + holiday trend
columns (`type+holiday`) 0.3956 / 0.0533. Cut 2017-09-17: 0.3980 / 0.0492, 0.3983 / 0.0514, 0.3987 / 0.0512,
0.3982 / 0.0510. Also within +-0.002 for_you: the customer's product-type history (`type`), category instead of type
(`category`), holiday trend alone (`holiday`), basket-rate-adjusted expected purchases (`expected`), the share of
the customer's main store's shoppers buying the item (`store`). The discover gain of the co-purchase columns did not
carry over to the test holdout (experiments/item_similarity.py), so nothing here is served. `coverage` on the
2017-10-22 cut: the candidate lists hold 44,129 of the 48,724 previously bought and 3,917 of the 70,194 never-bought
truth items; the best reachable precision@10 is 0.762 for for_you and 0.186 for discover. With one year of data no
validation cut holds a Christmas. Rerun when the script moved here (cut 2017-10-22, never-bought popularity 0.0345):
`--seeds base cooc` 0.3968 / 0.0514 and 0.3964 / 0.0564; `coverage` 44,129 of 48,724 and 3,916 of 70,194, best
reachable 0.762 / 0.185.
"""

from __future__ import annotations

import pickle
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from experiments import item_similarity
from pantry.models.recommender_candidates import (
    FEATURE_NAMES,
    LABEL_DAYS,
    Candidates,
    History,
    ItemStats,
    candidate_features,
    item_stats,
)
from pantry.settings import get_settings
from training import recommender
from training.als import AlsParams
from training.data import Index, build_history, item_popularity, load_purchases, parse_until, to_days
from training.gbm import GbmParams, fit_lambdarank
from training.protocol import REC_CUT


@dataclass
class CutData:
    """Everything known at one cut (history strictly before it) and the truth of the 35 days after it."""

    cut: datetime
    before: pd.DataFrame
    index: Index
    hist: History
    uf: np.ndarray
    itf: np.ndarray
    stats: ItemStats
    users: np.ndarray
    cands: list[Candidates]
    truth: dict[int, set[int]]


def build_cut(purchases: pd.DataFrame, cut: datetime, params: AlsParams, max_users: int | None,
              seed: int = 0) -> CutData:
    before = purchases[purchases["day"] < to_days(cut)]
    _b, index, _m, _model, uf, itf = recommender.fit_als_at(purchases, cut, params)
    hist = build_history(before, index, cut)
    stats = item_stats(item_popularity(before, index, cut), recommender.repeat_rates(hist, len(index.products)),
                       recommender.item_trend(before, index, cut))
    end = cut + timedelta(days=LABEL_DAYS)
    truth = recommender.truth_sets(purchases[purchases["day"] < to_days(end)], index, cut, end)
    users = np.array(sorted(truth), dtype=np.int64)
    if max_users is not None and len(users) > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, size=max_users, replace=False))
    users, cands = recommender.batch_candidates(users, hist, uf, itf, stats)
    return CutData(cut, before, index, hist, uf, itf, stats, users, cands, truth)


def cached_cuts(valid_cut: datetime = REC_CUT - timedelta(days=LABEL_DAYS),
                params: AlsParams = AlsParams(), tag: str = "") -> tuple[CutData, CutData]:
    path = Path(tempfile.gettempdir()) / "pantry-experiments" / f"cuts_{valid_cut.date()}{tag}.pkl"
    if path.exists():
        a, b = pickle.loads(path.read_bytes())
        return CutData(**a), CutData(**b)
    purchases = load_purchases(get_settings(), valid_cut + timedelta(days=LABEL_DAYS))
    train = build_cut(purchases, valid_cut - timedelta(days=LABEL_DAYS), params, 1500)
    valid = build_cut(purchases, valid_cut, params, None)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps((train.__dict__, valid.__dict__), protocol=5))
    return train, valid


# An experiment maps a cut's data to extra feature columns per customer (list aligned with cd.cands) and may add
# candidates first (returns the new CutData).
Extra = Callable[[CutData], list[np.ndarray]]


def labels(cd: CutData) -> list[np.ndarray]:
    return [np.isin(c.items, np.fromiter(cd.truth.get(int(u), ()), dtype=np.int64)).astype(np.float32)
            for u, c in zip(cd.users, cd.cands, strict=True)]


def matrix(cd: CutData, extra: list[np.ndarray] | None) -> list[np.ndarray]:
    if extra is None:
        return [c.features for c in cd.cands]
    return [np.hstack([c.features, e.astype(np.float32)]) for c, e in zip(cd.cands, extra, strict=True)]


def never_bought_popularity(cd: CutData) -> float:
    popular = cd.before.groupby("product_id")["basket_id"].nunique().sort_values(ascending=False, kind="stable")
    pop_items = cd.index.item_idx(popular.index.to_numpy()[:500])
    out = []
    for u in cd.users:
        bought = set(cd.hist.items[cd.hist.row(int(u))].tolist())
        top = [i for i in pop_items.tolist() if i not in bought][:10]
        out.append(len(set(top) & cd.truth.get(int(u), set())) / 10)
    return float(np.mean(out))


def p_at_10(cd: CutData, scores: list[np.ndarray], keep: Callable[[Candidates], np.ndarray] | None):
    out = []
    for u, c, s in zip(cd.users, cd.cands, scores, strict=True):
        if keep is not None:
            s = np.where(keep(c), s, -np.inf)
        top = np.argsort(-s, kind="stable")[:10]
        bought = cd.truth.get(int(u), set())
        out.append(sum(1 for j in top if np.isfinite(s[j]) and int(c.items[j]) in bought) / 10)
    return float(np.mean(out))


def run(train: CutData, valid: CutData, extra: Extra | None, names: tuple[str, ...] = (),
        params: GbmParams = recommender.RERANKER_GBM, seeds: tuple[int, ...] = (0,)) -> dict[str, float]:
    xt = matrix(train, extra(train) if extra else None)
    xv = matrix(valid, extra(valid) if extra else None)
    yt = labels(train)
    keep = [i for i, y in enumerate(yt) if y.any() and not y.all()]
    x = np.concatenate([xt[i] for i in keep])
    y = np.concatenate([yt[i] for i in keep])
    sizes = np.array([len(yt[i]) for i in keep])
    base = FEATURE_NAMES[: xt[0].shape[1] - len(names)]
    all_names = base + tuple(names)
    fy, dis, fit_s = [], [], 0.0
    gains: dict[str, float] = {}
    for seed in seeds:
        start = time.perf_counter()
        model = fit_lambdarank(x, y, sizes, all_names, GbmParams(**{**params.__dict__, "seed": seed}))
        fit_s += time.perf_counter() - start
        booster = model._booster()
        flat = booster.predict(np.concatenate(xv), raw_score=True, num_threads=1)
        scores = np.split(flat, np.cumsum([len(a) for a in xv])[:-1])
        fy.append(p_at_10(valid, scores, None))
        dis.append(p_at_10(valid, scores, lambda c: c.count == 0))
        gains = model.params()
    return {"for_you": float(np.mean(fy)), "discover": float(np.mean(dis)), "fit_s": fit_s / len(seeds),
            "gains": {k: v for k, v in gains.items() if k not in FEATURE_NAMES}}


_PRODUCTS: pd.DataFrame | None = None


def item_codes(cd: CutData, column: str) -> np.ndarray:
    """A category code per item index (product_type, category, department...), -1 when unknown."""
    global _PRODUCTS
    if _PRODUCTS is None:
        from pantry import dataset

        _PRODUCTS = dataset.read_table(get_settings(), "products")
    p = _PRODUCTS.set_index("product_id")[column].reindex(cd.index.products)
    return pd.factorize(p, use_na_sentinel=True)[0].astype(np.int64)


def per_basket(cd: CutData) -> pd.DataFrame:
    b = cd.before[["customer_id", "product_id", "basket_id", "day"]].drop_duplicates(["customer_id", "product_id",
                                                                                      "basket_id"])
    return pd.DataFrame({"u": cd.index.user_idx(b["customer_id"].to_numpy()),
                         "i": cd.index.item_idx(b["product_id"].to_numpy()),
                         "b": b["basket_id"].to_numpy(), "day": b["day"].to_numpy()})


def type_features(cd: CutData, column: str = "product_type") -> list[np.ndarray]:
    """Per candidate: the customer's baskets with the item's type, the item's share of them, days since the type's
    last purchase relative to the type's interval, and baskets with another item of the type since this item's
    last purchase (a switch)."""
    code = item_codes(cd, column)
    pb = per_basket(cd)
    pb["t"] = code[pb["i"].to_numpy()]
    pb = pb[pb["t"] >= 0]
    tb = pb.drop_duplicates(["u", "t", "b"])[["u", "t", "day"]]
    n_t = int(code.max()) + 1
    key = tb["u"].to_numpy() * n_t + tb["t"].to_numpy()
    day0 = float(cd.before["day"].min()) - 1.0
    comp = np.sort(key * 1024.0 + (tb["day"].to_numpy() - day0))
    agg = tb.groupby(["u", "t"]).agg(n=("day", "size"), first=("day", "min"), last=("day", "max"))
    keys = agg.index.get_level_values(0).to_numpy() * n_t + agg.index.get_level_values(1).to_numpy()
    order = np.argsort(keys)
    keys, n, first, last = keys[order], agg["n"].to_numpy()[order], agg["first"].to_numpy()[order], \
        agg["last"].to_numpy()[order]
    ref = cd.hist.ref_day
    out = []
    for u, c in zip(cd.users, cd.cands, strict=True):
        t = code[c.items]
        k = int(u) * n_t + t
        pos = np.clip(np.searchsorted(keys, k), 0, len(keys) - 1)
        found = (keys[pos] == k) & (t >= 0)
        tn = np.where(found, n[pos], 0.0)
        tlast = np.where(found, last[pos], np.nan)
        tfirst = np.where(found, first[pos], np.nan)
        interval = np.where(tn >= 2, (tlast - tfirst) / np.maximum(tn - 1, 1), 60.0)
        tdays = np.where(found, ref - tlast, 400.0)
        item_last = ref - np.where(np.isfinite(c.days_since), c.days_since, 400.0)
        lo = np.searchsorted(comp, k * 1024.0 + (item_last - day0) + 0.01)
        hi = np.searchsorted(comp, k * 1024.0 + 1023.0)
        since = np.where((c.count > 0) & found, hi - lo, 0)
        out.append(np.column_stack([np.log1p(tn), np.where(tn > 0, c.count / np.maximum(tn, 1), 0.0),
                                    np.log1p(tdays), np.minimum(np.log1p(tdays / np.maximum(interval, 1.0)), 3.0),
                                    np.log1p(since), since > 0]))
    return out


def cooc_features(cd: CutData) -> list[np.ndarray]:
    """experiments/item_similarity.py's three columns (item-item cosine kNN over the history before the cut): summed
    and max similarity to the customer's items of the last 4 weeks, summed similarity to all their items."""
    sim = _similarity(cd)
    out = []
    for u, c in zip(cd.users, cd.cands, strict=True):
        recent, all_bought = item_similarity.customer_sources(cd.hist, int(u))
        out.append(item_similarity.columns(sim, recent, all_bought, c.items))
    return out


_SIM: dict[tuple, item_similarity.ItemSimilarity] = {}


def _similarity(cd: CutData, k: int | None = None) -> item_similarity.ItemSimilarity:
    key = (cd.cut, k or item_similarity.NEIGHBOURS)
    if key not in _SIM:
        _SIM[key] = item_similarity.fit(cd.hist, len(cd.index.products), k=key[1])
    return _SIM[key]


def store_features(cd: CutData, days: float = 28.0) -> list[np.ndarray]:
    """Share of the customer's main store's shoppers (last `days`) who bought the item there."""
    rec = cd.before[(cd.before["day"] >= cd.hist.ref_day - days) & (cd.before["store_id"] >= 0)]
    main = cd.before.groupby("customer_id")["store_id"].agg(lambda s: s.value_counts().index[0])
    shoppers = rec.groupby("store_id")["customer_id"].nunique()
    buyers = rec.groupby(["store_id", "product_id"])["customer_id"].nunique()
    out = []
    for u, c in zip(cd.users, cd.cands, strict=True):
        cid = int(cd.index.customers[int(u)])
        s = int(main.get(cid, -1))
        n = float(shoppers.get(s, 0))
        if n == 0:
            out.append(np.zeros((len(c.items), 2)))
            continue
        b = buyers.loc[s] if s in buyers.index.get_level_values(0) else pd.Series(dtype=float)
        got = b.reindex(cd.index.products[c.items]).fillna(0).to_numpy()
        out.append(np.column_stack([got / n, np.log1p(n) * np.ones(len(got))]))
    return out


def holiday_trend(cd: CutData) -> list[np.ndarray]:
    """Item buyers in the last 21 days vs the 8 weeks before, and the last 7 vs the 21 before."""
    ref = cd.hist.ref_day
    n = len(cd.index.products)

    def buyers(lo: float, hi: float) -> np.ndarray:
        w = cd.before[(cd.before["day"] >= ref - lo) & (cd.before["day"] < ref - hi)]
        g = w.groupby("product_id")["customer_id"].nunique()
        o = np.zeros(n)
        o[cd.index.item_idx(g.index.to_numpy())] = g.to_numpy()
        return o

    t21 = np.log((buyers(21, 0) + 1.0) / (buyers(77, 21) * 21 / 56 + 1.0))
    t7 = np.log((buyers(7, 0) + 1.0) / (buyers(28, 7) / 3 + 1.0))
    return [np.column_stack([t21[c.items], t7[c.items]]) for c in cd.cands]


def expected_features(cd: CutData) -> list[np.ndarray]:
    """The customer's recent basket rate (last 8 weeks) x the item's share of their baskets -> expected baskets with
    the item in the label window, and P(at least one)."""
    ref = cd.hist.ref_day
    rec = cd.before[cd.before["day"] >= ref - 56]
    nb = rec.groupby("customer_id")["basket_id"].nunique()
    out = []
    for u, c in zip(cd.users, cd.cands, strict=True):
        cid = int(cd.index.customers[int(u)])
        rate = float(nb.get(cid, 0)) / 56.0
        share = c.count / max(float(cd.hist.n_baskets[int(u)]), 1.0)
        lam = rate * LABEL_DAYS * share
        out.append(np.column_stack([lam, 1.0 - np.exp(-lam), np.full(len(c.items), np.log1p(rate * 7))]))
    return out


def new_candidate_rows(cd: CutData, u: int, c: Candidates, new: np.ndarray) -> Candidates:
    """`c` with the never-bought items `new` appended (the standard features of a never-bought candidate)."""
    h = cd.hist
    sl = h.row(u)
    first = float(h.first_day[sl].min()) if sl.stop > sl.start else h.ref_day
    z = np.zeros(len(new), dtype=np.float32)
    f = candidate_features(z, z, z, z.astype(np.float64), z.astype(np.float64), float(h.n_baskets[u]),
                                       cd.itf[new] @ cd.uf[u], cd.stats.popularity[new], cd.stats.repeat_rate[new],
                                       h.ref_day, first, z, z, float(h.active_weeks[u]), cd.stats.trend[new])
    days = np.concatenate([c.days_since, np.full(len(new), np.inf)])
    return Candidates(np.concatenate([c.items, new]), np.vstack([c.features, f]),
                                  np.concatenate([c.count, z]), days)


def add_cooc_candidates(cd: CutData, n: int = 30, k: int | None = None) -> CutData:
    """+ the `n` never-bought items most similar (item-item cosine) to the customer's items of the last 4 weeks
    (all their items when nothing is recent)."""
    sim = _similarity(cd, k)
    cands = []
    for u, c in zip(cd.users, cd.cands, strict=True):
        recent, all_bought = item_similarity.customer_sources(cd.hist, int(u))
        s = sim.summed(recent if len(recent) else all_bought)
        s[all_bought] = -1
        s[c.items] = -1
        top = np.argpartition(-s, n)[:n]
        top = top[s[top] > 0]
        cands.append(new_candidate_rows(cd, int(u), c, top[np.argsort(-s[top])].astype(np.int64)))
    return CutData(**{**cd.__dict__, "cands": cands})


TRANSFORMS: dict[str, Callable[[CutData], CutData]] = {
    "cand_cooc": add_cooc_candidates,
    "cand_cooc60": lambda cd: add_cooc_candidates(cd, 60),
}


def _cooc_k(cd: CutData, k: int) -> list[np.ndarray]:
    saved = item_similarity.NEIGHBOURS
    item_similarity.NEIGHBOURS = k
    try:
        return cooc_features(cd)
    finally:
        item_similarity.NEIGHBOURS = saved


def _combine(*fns: Extra) -> Extra:
    def f(cd: CutData) -> list[np.ndarray]:
        parts = [fn(cd) for fn in fns]
        return [np.hstack(p) for p in zip(*parts, strict=True)]

    return f


TYPE_NAMES = ("log_type_baskets", "type_share", "log_type_days", "type_cycle", "log_type_since", "switched")
COOC_NAMES = ("log_cooc_recent", "cooc_max_recent", "log_cooc_all")
EXPERIMENTS: dict[str, tuple[Extra | None, tuple[str, ...]]] = {
    "base": (None, ()),
    "type": (type_features, TYPE_NAMES),
    "category": (lambda cd: type_features(cd, "category"), TYPE_NAMES),
    "cooc": (cooc_features, COOC_NAMES),
    "cooc_k50": (lambda cd: _cooc_k(cd, 50), COOC_NAMES),
    "store": (store_features, ("store_share", "log_store_shoppers")),
    "holiday": (holiday_trend, ("trend21", "trend7")),
    "expected": (expected_features, ("lam", "p_any", "log_weekly_baskets")),
}


def main(names: list[str]) -> None:
    t0 = time.perf_counter()
    cut = next((n for n in names if n.startswith("--cut=")), None)
    names = [n for n in names if n != cut]
    train, valid = cached_cuts(parse_until(cut[6:])) if cut else cached_cuts()
    print(f"cuts ready in {time.perf_counter() - t0:.0f} s: train {len(train.users)} customers, "
          f"valid {len(valid.users)}; never-bought popularity {never_bought_popularity(valid):.4f}", flush=True)
    seeds = (0, 1, 2) if "--seeds" in names else (0,)
    for name in [n for n in names if n != "--seeds"] or ["base"]:
        tr, va, label = train, valid, name
        for t in [p for p in name.split("+") if p in TRANSFORMS]:
            tr, va = TRANSFORMS[t](tr), TRANSFORMS[t](va)
        name = "+".join(p for p in name.split("+") if p not in TRANSFORMS) or "base"
        if "+" in name:
            parts = [EXPERIMENTS[p] for p in name.split("+")]
            fn, cols = _combine(*[p[0] for p in parts]), sum((p[1] for p in parts), ())
        else:
            fn, cols = EXPERIMENTS[name]
        r = run(tr, va, fn, cols, seeds=seeds)
        print(f"{label:30s} for_you {r['for_you']:.4f}  discover {r['discover']:.4f}  fit {r['fit_s']:.1f} s  "
              f"{r['gains']}", flush=True)


def coverage(cd: CutData) -> None:
    """How much of the truth the candidate lists hold: bought / never-bought, and the best p@10 they allow."""
    hit_b = hit_n = tot_b = tot_n = 0
    best_f, best_d = [], []
    for u, c in zip(cd.users, cd.cands, strict=True):
        t = cd.truth.get(int(u), set())
        bought_before = set(cd.hist.items[cd.hist.row(int(u))].tolist())
        lab = np.isin(c.items, np.fromiter(t, dtype=np.int64))
        hit_b += int(lab[c.count > 0].sum())
        hit_n += int(lab[c.count == 0].sum())
        tot_b += len(t & bought_before)
        tot_n += len(t - bought_before)
        best_f.append(min(int(lab.sum()), 10) / 10)
        best_d.append(min(int(lab[c.count == 0].sum()), 10) / 10)
    print(f"truth bought-before {tot_b} in candidates {hit_b}; never-bought {tot_n} in candidates {hit_n}; "
          f"oracle p@10 for_you {np.mean(best_f):.3f} discover {np.mean(best_d):.3f}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["coverage"]:
        coverage(cached_cuts()[1])
    else:
        main(sys.argv[1:])
