"""Which ranker, pool size and features for substitutions, measured on a validation cut before the test cut?

Protocol: the ranker is trained on the WINDOWS switch windows before VALIDATION_CUT (2017-09-01) and scores every
switch event from it to the test cut (2017-11-01), with everything as of the validation cut, as the test protocol
does at its cut. Events and candidate rows are built once with the largest pool; smaller pools are the prefix of it
(the pool is ordered by buyers), so variants differ only in the pool used for training and for scoring. hit@3 counts
every event (a chosen item outside the pool or new to the catalogue is a miss), averaged over bagging seeds.

Commands (PANTRY_VALIDATION_ROWS=<file.pkl> keeps the built rows between runs):
- `PANTRY_DATA_DIR=... .venv/bin/python -m experiments.substitution_ranker [TRAIN_POOL:SCORE_POOL ...]` (default
  50:50): each pool pair with the served columns, all EXTRA_NAMES candidate columns, and each of them alone;
- `... -m experiments.substitution_ranker 0:0`: the served path. Serving reads the stock of the first 20 candidates
  `candidate_pools` returns only; hit@3 when those are the first 20 by buyers, or the first 20 by the ranker's score
  on customer-neutral rows (what `candidate_pools` does), against ranking the whole pool.

Results (recorded in docs/MODEL_REPORT.md when measured; validation switch events Sep-Oct 2017: 19,204):
- Ranker kind (earlier versions of this script, variants no longer in it): conditional logit on the 13 original
  features 0.323, + switch / co-buyer / new-buyer / age features 0.326; LightGBM lambdarank 100 trees x 15 leaves on
  2 windows 0.331 (served), on 4 windows 0.334 (twice the fit time); binary objective 0.322; lambdarank 200 trees x
  31 leaves lr 0.05 0.326. LightGBM settings re-checked later (one thread; served 0.3264 in that run): rank_xendcg
  0.322 (200 trees 0.320), 200 trees 0.324, 31 leaves with 300 rows per leaf 0.324, feature fraction 0.5 0.326,
  lambdarank truncation 5 0.324, 255 bins 0.326.
- Features tried and not kept (none above +0.003): the candidate's store sales in the 28 / 7 days before each event
  0.330, the customer's share of the candidate's maker and price-tier gap 0.332 (against 0.331); columns relative to
  the event's candidate list 0.3252-0.3276; the candidate's sales at the event's store over the 90 days before the
  window 0.3278; the promotions table at the event's store and week (display / mailer) 0.3286; 4 windows
  0.3277-0.3283 (fit 1.6x), against 0.3264.
- This script's variants (2 seeds, served 0.3266): pools train / score 50/100 0.3272, 100/100 0.3269, 150/150
  0.3281 (fit 20-53 s); each EXTRA_NAMES column alone 0.3252-0.3271, all seven 0.3245. The pool is not the
  bottleneck: ranked by buyers, the chosen item is in the top 3 for 0.280 of the validation switches, top 20 0.664,
  top 50 0.831, top 100 0.901, top 150 0.920 (7.0% chose an item new to the catalogue).
- `0:0`: first 20 by buyers 0.3219, first 20 by the neutral score 0.3269, whole pool 0.3268: serving's 20 reads
  lose nothing once `candidate_pools` orders the type's 150 most bought items by the neutral score (served). Rerun
  when the script moved here (4 min): 0.3219 / 0.3273 / 0.3274; with 50 reads 0.3268 / 0.3274 / 0.3274.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from pantry.models.substitution_features import FEATURE_NAMES, POOL, features, pool
from pantry.settings import Settings, get_settings
from training import als
from training import substitutions as sub
from training.data import load_purchases, to_days
from training.gbm import fit_lambdarank
from training.protocol import SUB_CUT

VALIDATION_CUT = datetime(2017, 9, 1, tzinfo=UTC)
LARGEST_POOL = 150
SEEDS = (0, 1)


@dataclass
class EventRows:
    x: list[np.ndarray]  # per event: candidate rows (pool minus usual and bought), pool order
    pool_pos: list[np.ndarray]  # per event: each candidate's position in the pool before the exclusions
    chosen: list[int]  # per event: the chosen item's row, -1 when outside the largest pool or new

    def take(self, pool_size: int) -> tuple[list[np.ndarray], list[int]]:
        xs, pos = [], []
        for x, p, c in zip(self.x, self.pool_pos, self.chosen, strict=True):
            keep = p < pool_size
            xs.append(x[keep])
            pos.append(c if 0 <= c < int(keep.sum()) else -1)
        return xs, pos


EXTRA_NAMES = ("log_recent_switch", "recent_switch_rate", "recent_share", "log_recent_rank", "store_type_share",
               "log_store_rank", "new_share")


def extra_tables(before: pd.DataFrame, index, cat) -> dict:
    n = len(index.products)
    ref = float(before["day"].max())
    first = before.groupby(["customer_id", "product_id"]).agg(n=("basket_id", "nunique"), first=("day", "min"))
    first = first.reset_index()
    first["i"] = index.item_idx(first["product_id"].to_numpy())
    first = first[first["i"] >= 0]
    first["t"] = cat.type_code[first["i"].to_numpy()]
    typed = first[first["t"] >= 0]
    usual = sub.usual_items(typed)
    m = typed.merge(usual, on=["customer_id", "t"])
    m = m[(m["i"] != m["u"]) & (m["first"] > m["fu"]) & (m["first"] >= ref - 90)]
    agg = m.groupby(["u", "i"]).size().reset_index(name="sw")
    key = agg["u"].to_numpy(np.int64) * n + agg["i"].to_numpy(np.int64)
    order = np.argsort(key)
    # recent rank within type by recent buyers
    t = cat.type_code
    rb = cat.recent_buyers
    type_recent = np.bincount(np.maximum(t, 0), weights=rb * (t >= 0), minlength=int(t.max()) + 1)
    type_new = np.bincount(np.maximum(t, 0), weights=cat.new_buyers * (t >= 0), minlength=int(t.max()) + 1)
    order_r = np.lexsort((-rb, t))
    rank = np.empty(n, dtype=np.float32)
    ts = t[order_r]
    starts = np.searchsorted(ts, ts, side="left")
    rank[order_r] = np.arange(n) - starts
    units = sub.store_units(before, index)
    return {"key": key[order], "sw": agg["sw"].to_numpy(np.float32)[order], "type_recent": type_recent,
            "type_new": type_new, "recent_rank": rank, "units": units}


def extra_columns(e: dict, cat, usual: int, cands: np.ndarray, store: int) -> np.ndarray:
    out = np.zeros((len(cands), len(EXTRA_NAMES)), dtype=np.float32)
    key = np.int64(usual) * len(cat.products) + cands.astype(np.int64)
    pos = np.clip(np.searchsorted(e["key"], key), 0, len(e["key"]) - 1)
    sw = np.where(e["key"][pos] == key, e["sw"][pos], 0.0)
    out[:, 0] = np.log1p(sw)
    out[:, 1] = sw / (cat.usual_customers[usual] + 1.0)
    t = cat.type_code[usual]
    if t >= 0:
        out[:, 2] = cat.recent_buyers[cands] / max(e["type_recent"][t], 1.0)
        out[:, 6] = cat.new_buyers[cands] / max(e["type_new"][t], 1.0)
    out[:, 3] = np.log1p(e["recent_rank"][cands])
    su = e["units"].get(store)
    if su is not None:
        u = su[cands]
        out[:, 4] = u / max(float(u.sum()), 1.0)
        out[:, 5] = np.log1p(np.argsort(np.argsort(-u, kind="stable"), kind="stable"))
    return out


def rows_at(settings: Settings, purchases: pd.DataFrame, start: datetime, end: datetime) -> EventRows:
    before, index, uf, cat = sub.fit_at(settings, purchases, start, als.AlsParams(), LARGEST_POOL)
    after = purchases[(purchases["day"] >= to_days(start)) & (purchases["day"] < to_days(end))]
    ev = sub.switch_events(settings, before, after, index)
    shares = sub.private_share(before, index, cat)
    units = sub.store_units(before, index)
    extra = extra_tables(before, index, cat)
    out = EventRows([], [], [])
    for j in range(len(ev.customers)):
        full = pool(cat, int(ev.usual[j]), LARGEST_POOL)
        keep = ~np.isin(full, ev.bought[j])
        cands = full[keep]
        u = index.user_idx(np.array([ev.customers[j]]))[0]
        su = units.get(int(ev.store_id[j]))
        x = features(cat, int(ev.usual[j]), cands, float(shares.get(int(ev.customers[j]), 0.2)),
                         uf[u] if u >= 0 else None,
                         su[cands] if su is not None else np.zeros(len(cands), dtype=np.float32))
        x = np.hstack([x, extra_columns(extra, cat, int(ev.usual[j]), cands, int(ev.store_id[j]))])
        hit = np.flatnonzero(cands == ev.chosen[j])
        out.x.append(x)
        out.pool_pos.append(np.flatnonzero(keep))
        out.chosen.append(int(hit[0]) if len(hit) else -1)
    return out


def fit(train: list[EventRows], pool_size: int, seed: int, cols: np.ndarray):
    xs, pos = [], []
    for rows in train:
        for x, p in zip(*rows.take(pool_size), strict=True):
            if p >= 0 and len(x):
                xs.append(x[:, cols])
                pos.append(p)
    sizes = np.array([len(x) for x in xs])
    labels = np.zeros(int(sizes.sum()), dtype=np.float32)
    labels[np.concatenate([[0], np.cumsum(sizes)[:-1]]) + np.array(pos)] = 1.0
    params = dataclasses.replace(sub.RANKER_GBM, seed=seed)
    names = tuple((FEATURE_NAMES + EXTRA_NAMES)[c] for c in cols)
    return fit_lambdarank(np.concatenate(xs), labels, sizes, names, params, eval_at=3), int(sizes.sum())


def hit3(model, rows: EventRows, pool_size: int, cols: np.ndarray) -> float:
    xs, pos = rows.take(pool_size)
    sizes = [len(x) for x in xs]
    logits = model.logit(np.concatenate([x[:, cols] for x in xs if len(x)]))
    hits, lo = 0, 0
    for n, p in zip(sizes, pos, strict=True):
        if n and p >= 0:
            hits += int(p in np.argsort(-logits[lo:lo + n], kind="stable")[:3])
        lo += n
    return hits / len(xs)


def main(variants: list[tuple[int, int]]) -> None:
    settings = get_settings()
    purchases = load_purchases(settings, SUB_CUT)
    start = time.perf_counter()
    cache = os.environ.get("PANTRY_VALIDATION_ROWS")  # a pickle of the rows, to rerun variants without rebuilding
    if cache and Path(cache).exists():
        train, valid = pickle.loads(Path(cache).read_bytes())
    else:
        train = [rows_at(settings, purchases, VALIDATION_CUT - timedelta(days=w * sub.SWITCH_DAYS),
                         VALIDATION_CUT - timedelta(days=(w - 1) * sub.SWITCH_DAYS))
                 for w in range(1, sub.WINDOWS + 1)]
        valid = rows_at(settings, purchases, VALIDATION_CUT, SUB_CUT)
        if cache:
            Path(cache).write_bytes(pickle.dumps((train, valid)))
    print(f"rows built in {time.perf_counter() - start:.0f} s: {len(valid.x)} validation events", flush=True)
    base = len(FEATURE_NAMES)
    col_sets = {"base": np.arange(base), "+ all extra": np.arange(base + len(EXTRA_NAMES))}
    for k, name in enumerate(EXTRA_NAMES):
        col_sets[f"+ {name}"] = np.r_[np.arange(base), base + k]
    if variants == [(0, 0)]:  # the served path: serving reads the stock of MAX_POOL candidates per product only
        model, _n = fit(train, POOL, 0, col_sets["base"])
        for keep in (20, 50):
            print(f"first {keep} candidates reach the ranker:", truncated(model, valid, col_sets["base"], keep))
        return
    for (train_pool, score_pool), (label, cols) in [(v, c) for v in variants for c in col_sets.items()]:
        got, t0 = [], time.perf_counter()
        for seed in SEEDS:
            model, n_rows = fit(train, train_pool, seed, cols)
            got.append(hit3(model, valid, score_pool, cols))
        print(f"{label}: train pool {train_pool} ({n_rows} rows), score pool {score_pool}: hit@3 {np.mean(got):.4f} "
              f"(seeds {', '.join(f'{g:.4f}' for g in got)}; {(time.perf_counter() - t0) / len(SEEDS):.1f} s/fit)",
              flush=True)


def neutral(x: np.ndarray) -> np.ndarray:
    """The rows as a request without a known customer or store sees them (what `candidate_pools` can score)."""
    out = x.copy()
    names = FEATURE_NAMES
    out[:, names.index("customer_affinity")] = 0.0
    out[:, names.index("log_store_units_28d")] = 0.0
    out[:, names.index("customer_brand_kind_share")] = 0.5
    return out


def truncated(model, rows: EventRows, cols: np.ndarray, keep: int) -> dict[str, float]:
    """hit@3 when only `keep` candidates per event reach the ranker: the first by buyers, or by the ranker's score
    on neutral rows (no customer, no store)."""
    hits = {"by buyers": 0, "by neutral score": 0, "all": 0}
    for x, p in zip(*rows.take(LARGEST_POOL), strict=True):
        if not len(x) or p < 0:
            continue
        full = model.logit(x[:, cols])
        order = np.argsort(-full, kind="stable")
        hits["all"] += int(p in order[:3])
        for name, subset in (("by buyers", np.arange(min(keep, len(x)))),
                             ("by neutral score", np.argsort(-model.logit(neutral(x)[:, cols]), kind="stable")[:keep])):
            o = subset[np.argsort(-full[subset], kind="stable")]
            hits[name] += int(p in o[:3])
    return {k: v / len(rows.x) for k, v in hits.items()}


if __name__ == "__main__":
    pairs = [tuple(int(v) for v in arg.split(":")) for arg in sys.argv[1:]] or [(50, 50)]
    main(pairs)

