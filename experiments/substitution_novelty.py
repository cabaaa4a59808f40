"""Can the substitution ranker tell, per shopper, a switch to a never-bought item from a return to their own other
items, and so lift both served protocols with one list of 3?

Protocol (validation cut VALIDATION_CUT = 2017-07-25: its 35-day truth ends before the served evaluation's first cut,
2017-09-01): rankers trained as `pantry train` trains them (training/substitutions.py: the WINDOWS windows before the
cut, up to RANKER_EVENTS_PER_WINDOW departures each), everything as of the cut; scored on the served evaluation's two
protocols of the 35 days after the cut (training/served_cases.py): `new item` (first purchase of a never-bought item
of the type) and `any departure` (first purchase of the type other than the usual item). Candidates = what serving
ranks: the type's pool (its first N by buyers; serving: the first 20 of the served pool) plus the customer's own other
items of the type (OWN_CANDIDATES). hit@3 over every event (outside the candidates = a miss), and the two rules on the
same events.

Extra columns tried, computed from the purchases before each window's start (the customer's and the type's history):
- novelty: the customer's share of purchase lines that were a first purchase of an item (overall and in the type),
  the type's share over every customer, the customer's lines in the type (log);
- never_rank: the candidate's rank among the candidates the customer never bought (what the never-bought rule
  ranks by), -1 for an item bought before;
- loyalty: the customer's share of the type's lines of the candidate's maker and of its size.
Training sets: departures (as served), or departures + the new-item protocol's events of the same windows.

Command: `PANTRY_DATA_DIR=.pantry nice -n 10 .venv/bin/python -m experiments.substitution_novelty [CUT]`
(~6 min on 2 cores). Results: docs/DECISIONS.md "Can the substitution ranker tell who switches to a new item?".
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from pantry.models.substitution_features import FEATURE_NAMES, OWN_CANDIDATES
from pantry.settings import get_settings
from training import als
from training import substitutions as sub
from training.data import load_purchases, to_days
from training.gbm import fit_lambdarank

VALIDATION_CUT = datetime(2017, 7, 25, tzinfo=UTC)
TRUTH_DAYS = 35
EXTRA = {"novelty": ("cust_novelty", "cust_type_novelty", "type_novelty", "log_cust_type_lines"),
         "never_rank": ("never_rank",), "loyalty": ("maker_share", "size_share")}
EXTRA_NAMES = tuple(n for names in EXTRA.values() for n in names)


def history_tables(settings, before: pd.DataFrame, index, cat):
    """Per customer / (customer, type) / type novelty and line counts, (customer, type, maker|size) line counts."""
    lines = before[["customer_id", "product_id", "basket_id"]].drop_duplicates()
    i = index.item_idx(lines["product_id"].to_numpy())
    lines = lines[i >= 0].assign(i=i[i >= 0])
    lines = lines.assign(t=cat.type_code[lines["i"].to_numpy()], m=cat.manufacturer[lines["i"].to_numpy()],
                         s=cat.size_code[lines["i"].to_numpy()])
    cust = lines.groupby("customer_id").agg(n=("i", "size"), d=("i", "nunique"))
    cust_nov = (cust["d"] / cust["n"]).to_dict()
    ct = lines.groupby(["customer_id", "t"]).agg(n=("i", "size"), d=("i", "nunique"))
    ct_nov = (ct["d"] / ct["n"]).to_dict()
    ct_n = ct["n"].to_dict()
    tt = lines.groupby(["t", "customer_id"]).agg(n=("i", "size"), d=("i", "nunique")).groupby("t").sum()
    type_nov = np.zeros(int(cat.type_code.max()) + 2, dtype=np.float32)
    type_nov[tt.index.to_numpy()] = (tt["d"] / tt["n"]).to_numpy()
    maker = lines.groupby(["customer_id", "t", "m"]).size().to_dict()
    size = lines.groupby(["customer_id", "t", "s"]).size().to_dict()
    return cust_nov, ct_nov, ct_n, type_nov, maker, size


def extra_columns(tables, cat, customer: int, usual: int, cands: np.ndarray, bought: np.ndarray) -> np.ndarray:
    cust_nov, ct_nov, ct_n, type_nov, maker, size = tables
    t = int(cat.type_code[usual])
    n = ct_n.get((customer, t), 0)
    out = np.zeros((len(cands), len(EXTRA_NAMES)), dtype=np.float32)
    out[:, 0] = cust_nov.get(customer, 1.0)
    out[:, 1] = ct_nov.get((customer, t), 1.0)
    out[:, 2] = type_nov[t] if t >= 0 else 0.0
    out[:, 3] = np.log1p(n)
    mine = np.isin(cands, bought)
    out[:, 4] = np.where(mine, -1.0, np.log1p(np.cumsum(~mine) - 1))
    denom = max(n, 1)
    out[:, 5] = [maker.get((customer, t, int(m)), 0) / denom for m in cat.manufacturer[cands]]
    out[:, 6] = [size.get((customer, t, int(s)), 0) / denom for s in cat.size_code[cands]]
    return out


def blocks(settings, purchases, start, end, params, new_only: bool, sample: int | None):
    """Per event of [start, end): (candidates, rows with the extra columns, chosen, own candidates, usual, bought)."""
    before, index, uf, cat = sub.fit_at(settings, purchases, start, params)
    after = purchases[(purchases["day"] >= to_days(start)) & (purchases["day"] < to_days(end))]
    ev = sub.switch_events(settings, before, after, index, new_only=new_only)
    n_events = len(ev.customers)
    if sample:
        ev = ev.sample(sample)
    owns = sub.own_items_at(before, index, start)
    tables = history_tables(settings, before, index, cat)
    out = []
    for j, cands, x in sub.event_rows(cat, ev, sub.private_share(before, index, cat), index, uf,
                                      sub.store_units(before, index), owns, exclude_bought=False):
        if x is None:
            out.append(None)
            continue
        own = owns.get(int(ev.customers[j]), sub.NO_OWN_ITEMS)
        mine = sub.own_candidates(cat, int(ev.usual[j]), own)
        extra = extra_columns(tables, cat, int(ev.customers[j]), int(ev.usual[j]), cands, ev.bought[j])
        out.append((cands, np.hstack([x, extra]), int(ev.chosen[j]), mine, ev.bought[j]))
    return out, n_events, cat


def fit(train, cols, gbm=None):
    xs, pos = [], []
    for b in train:
        if b is None:
            continue
        cands, x, chosen, _mine, _bought = b
        hit = np.flatnonzero(cands == chosen)
        if len(hit):
            xs.append(x[:, cols])
            pos.append(int(hit[0]))
    sizes = np.array([len(x) for x in xs])
    labels = np.zeros(int(sizes.sum()), dtype=np.float32)
    labels[np.concatenate([[0], np.cumsum(sizes)[:-1]]) + np.array(pos)] = 1.0
    every = (*FEATURE_NAMES, *EXTRA_NAMES)
    names = tuple(every[c] if c < len(every) else f"column_{c}" for c in cols)
    return fit_lambdarank(np.concatenate(xs), labels, sizes, names, gbm or sub.RANKER_GBM, eval_at=3)


def served_rows(b, n_pool: int) -> np.ndarray:
    """Rows serving ranks: the pool's first n_pool (pool order) and the customer's own items of the type."""
    cands, _x, _chosen, mine, _bought = b
    keep = np.arange(len(cands)) < n_pool
    return np.flatnonzero(keep | np.isin(cands, mine[:OWN_CANDIDATES]))


def hit3(model, cols, test, n_pool) -> np.ndarray:
    h = np.zeros(len(test))
    for k, b in enumerate(test):
        if b is None:
            continue
        at = served_rows(b, n_pool)
        score = model.logit(b[1][at][:, cols])
        h[k] = b[2] in b[0][at][np.argsort(-score, kind="stable")[:3]]
    return h


def rules(test, cat) -> dict[str, np.ndarray]:
    own_rule, never_rule = np.zeros(len(test)), np.zeros(len(test))
    for k, b in enumerate(test):
        if b is None:
            continue
        cands, _x, chosen, mine, bought = b
        pool = cands[: sub.POOL]
        own_rule[k] = chosen in list(dict.fromkeys([*mine.tolist(), *pool.tolist()]))[:3]
        never_rule[k] = chosen in pool[~np.isin(pool, bought)][:3]
    return {"rule: own other items, then type popularity": own_rule,
            "rule: most popular never-bought of the type": never_rule}


def main() -> None:
    cut = datetime.fromisoformat(sys.argv[1]).replace(tzinfo=UTC) if len(sys.argv) > 1 else VALIDATION_CUT
    settings = get_settings()
    params = als.AlsParams()
    purchases = load_purchases(settings, cut + timedelta(days=TRUTH_DAYS))
    started = time.perf_counter()
    departures, new_events = [], []
    for w in range(1, sub.WINDOWS + 1):
        start = cut - timedelta(days=w * sub.SWITCH_DAYS)
        end = start + timedelta(days=sub.SWITCH_DAYS)
        departures += blocks(settings, purchases, start, end, params, False, sub.RANKER_EVENTS_PER_WINDOW)[0]
        new_events += blocks(settings, purchases, start, end, params, True, sub.RANKER_EVENTS_PER_WINDOW)[0]
    print(f"training rows in {time.perf_counter() - started:.0f} s")
    base = list(range(len(FEATURE_NAMES)))
    col = {n: len(FEATURE_NAMES) + k for k, n in enumerate(EXTRA_NAMES)}
    sets = {"served columns": base}
    for name, names in EXTRA.items():
        sets[f"+ {name}"] = base + [col[n] for n in names]
    sets["+ novelty, never_rank, loyalty"] = base + list(col.values())
    models = {f"{cols_name}, departures": (fit(departures, cols), cols) for cols_name, cols in sets.items()}
    for cols_name in ("served columns", "+ novelty, never_rank, loyalty"):
        models[f"{cols_name}, departures + new-item events"] = (fit(departures + new_events, sets[cols_name]),
                                                                sets[cols_name])
    print(f"trained in {time.perf_counter() - started:.0f} s")
    end = cut + timedelta(days=TRUTH_DAYS)
    tests = {"new item": blocks(settings, purchases, cut, end, params, True, None),
             "any departure": blocks(settings, purchases, cut, end, params, False, None)}
    for proto, (_test, n_events, _cat) in tests.items():
        print(f"{proto}: {n_events} events")
    print(f"{'method':70s} {'pool':>4s} {'new item':>9s} {'any departure':>14s}")
    for name, (model, cols) in models.items():
        for n_pool in (20, 40):
            h = {p: hit3(model, cols, t[0], n_pool).mean() for p, t in tests.items()}
            print(f"{name:70s} {n_pool:4d} {h['new item']:9.3f} {h['any departure']:14.3f}")
    r = {p: rules(t[0], t[2]) for p, t in tests.items()}
    for name in r["new item"]:
        print(f"{name:70s} {'':4s} {r['new item'][name].mean():9.3f} {r['any departure'][name].mean():14.3f}")
    print(f"done in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
