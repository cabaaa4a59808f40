"""Does the store's assortment help the substitution answer? The purchase that ends a departure happens at a store,
and serving knows the request's store: a candidate that store never sold in the year before the cut is less likely.

Same protocol as experiments/substitution_novelty.py (validation cut, served candidates: the pool's first 20 + own
items, every event of the 35 days after the cut; the served ranker's 24 columns, trained as served). Variants at
scoring: the served ranker alone; its candidates limited to the items the event's store sold in the 365 days before
the cut (all of them when it sold none); a penalty of 1 or 2 on the logit of the others.

Command: `PANTRY_DATA_DIR=.pantry nice -n 10 .venv/bin/python -W ignore -m experiments.substitution_store_assortment
[CUT]` (~3 min on 2 cores). Results: docs/DECISIONS.md "Can the substitution ranker tell who switches to a new item?".
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta

import numpy as np

from experiments.substitution_novelty import TRUTH_DAYS, VALIDATION_CUT, fit, served_rows
from pantry.models.substitution_features import FEATURE_NAMES
from pantry.settings import get_settings
from training import als
from training import substitutions as sub
from training.data import load_purchases, to_days

DAYS = 365


def events(settings, purchases, start, end, params, new_only, sample):
    """(blocks as experiments.substitution_novelty.blocks, each event's store, the index, the purchases before)."""
    before, index, uf, cat = sub.fit_at(settings, purchases, start, params)
    after = purchases[(purchases["day"] >= to_days(start)) & (purchases["day"] < to_days(end))]
    ev = sub.switch_events(settings, before, after, index, new_only=new_only)
    if sample:
        ev = ev.sample(sample)
    owns = sub.own_items_at(before, index, start)
    out = []
    for j, cands, x in sub.event_rows(cat, ev, sub.private_share(before, index, cat), index, uf,
                                      sub.store_units(before, index), owns, exclude_bought=False):
        own = owns.get(int(ev.customers[j]), sub.NO_OWN_ITEMS)
        out.append(None if x is None else (cands, x, int(ev.chosen[j]),
                                           sub.own_candidates(cat, int(ev.usual[j]), own), ev.bought[j]))
    return out, ev.store_id, index, before


def assortment(before, index, cut) -> dict[int, set[int]]:
    recent = before[before["day"] >= to_days(cut) - DAYS]
    i = index.item_idx(recent["product_id"].to_numpy())
    keep = i >= 0
    stores = recent["store_id"].to_numpy()[keep]
    out: dict[int, set[int]] = {}
    for s, item in zip(stores.tolist(), i[keep].tolist(), strict=True):
        out.setdefault(int(s), set()).add(int(item))
    return out


def main() -> None:
    cut = datetime.fromisoformat(sys.argv[1]).replace(tzinfo=UTC) if len(sys.argv) > 1 else VALIDATION_CUT
    settings = get_settings()
    params = als.AlsParams()
    purchases = load_purchases(settings, cut + timedelta(days=TRUTH_DAYS))
    train = []
    for w in range(1, sub.WINDOWS + 1):
        start = cut - timedelta(days=w * sub.SWITCH_DAYS)
        train += events(settings, purchases, start, start + timedelta(days=sub.SWITCH_DAYS), params, False,
                        sub.RANKER_EVENTS_PER_WINDOW)[0]
    cols = list(range(len(FEATURE_NAMES)))
    model = fit(train, cols)
    end = cut + timedelta(days=TRUTH_DAYS)
    print(f"{'variant':45s} {'new item':>9s} {'any departure':>14s}  (share of chosen items the store sold)")
    results: dict[str, dict[str, float]] = {}
    for proto, new_only in (("new item", True), ("any departure", False)):
        test, stores, index, before = events(settings, purchases, cut, end, params, new_only, None)
        sold = assortment(before, index, cut)
        h = {k: np.zeros(len(test)) for k in ("served ranker", "only what the store sold", "penalty 1", "penalty 2")}
        chosen_sold = []
        for k, b in enumerate(test):
            if b is None:
                continue
            at = served_rows(b, 20)
            c, score = b[0][at], model.logit(b[1][at][:, cols])
            here = sold.get(int(stores[k]), set())
            in_store = np.array([int(i) in here for i in c.tolist()])
            chosen_sold.append(b[2] in here)
            h["served ranker"][k] = b[2] in c[np.argsort(-score, kind="stable")[:3]]
            only = np.flatnonzero(in_store) if in_store.any() else np.arange(len(c))
            h["only what the store sold"][k] = b[2] in c[only][np.argsort(-score[only], kind="stable")[:3]]
            for pen in (1, 2):
                adj = score - pen * ~in_store
                h[f"penalty {pen}"][k] = b[2] in c[np.argsort(-adj, kind="stable")[:3]]
        results[proto] = {name: float(v.mean()) for name, v in h.items()}
        print(f"{proto}: chosen item sold by the event's store in the {DAYS} days before: {np.mean(chosen_sold):.3f}")
    for name in results["new item"]:
        print(f"{name:45s} {results['new item'][name]:9.3f} {results['any departure'][name]:14.3f}")


if __name__ == "__main__":
    main()
