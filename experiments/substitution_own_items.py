"""Does a ranker that sees the customer's own history in the type, trained on every departure from the usual item,
beat the served ranker (trained on switches to never-bought items, +1 logit for an item in the repertoire) and the
rules, on both served protocols?

Protocol: rankers trained on the WINDOWS windows before VALIDATION_CUT (2017-09-01), everything as of that cut;
scored on the events of the 35 days after it (the served evaluation's truth window): the first purchase of the type
other than the usual item (any departure), and the subset whose item was never bought before (new item). Candidates
are what serving ranks: the type's pool (POOL, by buyers) plus the customer's own other items of the type from the
repertoire row as of the cut. hit@3 over every event (a chosen item outside the candidates is a miss).

Command: `PANTRY_DATA_DIR=.pantry .venv/bin/python -m experiments.substitution_own_items` (~4 min on 2 cores).
Results: in docs/DECISIONS.md "Which items does serving rank as substitutes, and how much is a customer's own item
worth?".
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import numpy as np

from pantry.models.substitution_features import FEATURE_NAMES, LEGACY_FEATURES
from pantry.models.substitutions import REPERTOIRE_BONUS
from pantry.settings import get_settings
from training import als
from training import substitutions as sub
from training.data import load_purchases, to_days
from training.gbm import fit_lambdarank

VALIDATION_CUT = datetime(2017, 9, 1, tzinfo=UTC)
TRUTH_DAYS = 35


def rows_of(settings, purchases, start, end, params, new_only: bool, exclude_bought: bool):
    """(x blocks, candidates, chosen, events) of the events in [start, end), everything as of start."""
    before, index, uf, cat = sub.fit_at(settings, purchases, start, params)
    after = purchases[(purchases["day"] >= to_days(start)) & (purchases["day"] < to_days(end))]
    ev = sub.switch_events(settings, before, after, index, new_only=new_only)
    owns = sub.own_items_at(before, index, start)
    out = [(j, c, x) for j, c, x in sub.event_rows(cat, ev, sub.private_share(before, index, cat), index, uf,
                                                    sub.store_units(before, index), owns, exclude_bought)]
    return out, ev, cat, owns


def fit(blocks, cols):
    xs, pos = [], []
    for j, cands, x, ev in blocks:
        if x is None:
            continue
        hit = np.flatnonzero(cands == ev.chosen[j])
        if len(hit):
            xs.append(x[:, cols])
            pos.append(int(hit[0]))
    sizes = np.array([len(x) for x in xs])
    labels = np.zeros(int(sizes.sum()), dtype=np.float32)
    labels[np.concatenate([[0], np.cumsum(sizes)[:-1]]) + np.array(pos)] = 1.0
    return fit_lambdarank(np.concatenate(xs), labels, sizes, tuple(FEATURE_NAMES[c] for c in cols), sub.RANKER_GBM,
                          eval_at=3)


def main() -> None:
    settings = get_settings()
    params = als.AlsParams()
    purchases = load_purchases(settings, VALIDATION_CUT + timedelta(days=TRUTH_DAYS))
    started = time.perf_counter()
    train_old, train_new = [], []
    for w in range(1, sub.WINDOWS + 1):
        start = VALIDATION_CUT - timedelta(days=w * sub.SWITCH_DAYS)
        end = start + timedelta(days=sub.SWITCH_DAYS)
        old, ev_old, _, _ = rows_of(settings, purchases, start, end, params, new_only=True, exclude_bought=True)
        train_old += [(j, c, x, ev_old) for j, c, x in old]
        new, ev_new, _, _ = rows_of(settings, purchases, start, end, params, new_only=False, exclude_bought=False)
        train_new += [(j, c, x, ev_new) for j, c, x in new]
    legacy = list(range(LEGACY_FEATURES))
    every = list(range(len(FEATURE_NAMES)))
    rankers = {"served (switches, 19 columns, +1 repertoire bonus)": (fit(train_old, legacy), legacy, True),
               "every departure, 19 columns, no bonus": (fit(train_new, legacy), legacy, False),
               "every departure, 19 columns, +1 bonus": (fit(train_new, legacy), legacy, True),
               "every departure, own-history columns": (fit(train_new, every), every, False)}
    print(f"trained in {time.perf_counter() - started:.0f} s")
    test, ev, cat, owns = rows_of(settings, purchases, VALIDATION_CUT, VALIDATION_CUT + timedelta(days=TRUTH_DAYS),
                                  params, new_only=False, exclude_bought=False)
    new_item = np.array([not np.isin(ev.chosen[j], ev.bought[j]) for j in range(len(ev.customers))])
    hits: dict[str, np.ndarray] = {}
    bought_col = FEATURE_NAMES.index("customer_bought")
    for name, (model, cols, bonus) in rankers.items():
        h = np.zeros(len(ev.customers))
        for j, cands, x in test:
            if x is None:
                continue
            score = model.logit(x[:, cols]) + (REPERTOIRE_BONUS * x[:, bought_col] if bonus else 0.0)
            h[j] = ev.chosen[j] in cands[np.argsort(-score, kind="stable")][:3]
        hits[name] = h
    # the own-history ranker with its best never-bought candidates guaranteed 1 or 2 of the 3 slots
    model, cols, _bonus = rankers["every departure, own-history columns"]
    for reserve in (1, 2):
        h = np.zeros(len(ev.customers))
        for j, cands, x in test:
            if x is None:
                continue
            order = np.argsort(-model.logit(x[:, cols]), kind="stable").tolist()
            new = [i for i in order if x[i, bought_col] == 0][:reserve]
            picks = [i for i in order if i not in new][: 3 - len(new)] + new
            h[j] = ev.chosen[j] in cands[picks]
        hits[f"own-history columns, {reserve} slot(s) kept for never-bought items"] = h
    # the rules on the same candidates: own other items (most bought first) then type popularity; never-bought
    own_rule, never_rule = np.zeros(len(ev.customers)), np.zeros(len(ev.customers))
    for j, _cands, _x in test:
        usual = int(ev.usual[j])
        mine = sub.own_candidates(cat, usual, owns.get(int(ev.customers[j]), sub.NO_OWN_ITEMS))
        pool = sub.pool(cat, usual)
        ranked = list(dict.fromkeys([*mine.tolist(), *pool.tolist()]))[:3]
        own_rule[j] = ev.chosen[j] in ranked
        never_rule[j] = ev.chosen[j] in pool[~np.isin(pool, ev.bought[j])][:3]
    hits["rule: own other items, then type popularity"] = own_rule
    hits["rule: most popular never-bought of the type"] = never_rule
    print(f"events: {len(ev.customers)} any departure, {int(new_item.sum())} to a new item")
    print(f"{'method':55s} {'any departure':>14s} {'new item':>9s}")
    for name, h in hits.items():
        print(f"{name:55s} {h.mean():14.3f} {h[new_item].mean():9.3f}")


if __name__ == "__main__":
    main()
