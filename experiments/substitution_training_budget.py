"""How few training rows does the substitution ranker need? The retrain budget (120 s for the three models) is
spent mostly by its LightGBM lambdarank fit on every departure of two windows; this measures fit time and
validation hit@3 when the departures are sampled (a seeded share of the events of each window) and with the binary
objective instead of lambdarank.

Fit times are of a machine also running other work (2 cores): compare them with each other.

Protocol: experiments/substitution_own_items.py's (rankers trained on the sub.WINDOWS windows before 2017-09-01,
scored on the 35 days after it, candidates as served: the type's pool plus the customer's own other items).

Command: `PANTRY_DATA_DIR=.pantry .venv/bin/python -m experiments.substitution_training_budget` (~5 min on 2 cores).
Results: in docs/DECISIONS.md "How many departures the substitution ranker trains on".
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import timedelta

import numpy as np

from experiments.substitution_own_items import TRUTH_DAYS, VALIDATION_CUT, rows_of
from pantry.models.substitution_features import FEATURE_NAMES
from pantry.settings import get_settings
from training import als
from training import substitutions as sub
from training.data import load_purchases
from training.gbm import fit_lambdarank

VARIANTS = (("lambdarank", 1.0), ("lambdarank", 0.5), ("lambdarank", 0.25), ("binary", 1.0))


def blocks(train, share: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    xs, pos = [], []
    for j, cands, x, ev in train:
        if x is None or rng.random() >= share:
            continue
        hit = np.flatnonzero(cands == ev.chosen[j])
        if len(hit):
            xs.append(x)
            pos.append(int(hit[0]))
    sizes = np.array([len(x) for x in xs])
    labels = np.zeros(int(sizes.sum()), dtype=np.float32)
    labels[np.concatenate([[0], np.cumsum(sizes)[:-1]]) + np.array(pos)] = 1.0
    return np.concatenate(xs), labels, sizes


def main() -> None:
    settings = get_settings()
    params = als.AlsParams()
    purchases = load_purchases(settings, VALIDATION_CUT + timedelta(days=TRUTH_DAYS))
    train = []
    for w in range(1, sub.WINDOWS + 1):
        start = VALIDATION_CUT - timedelta(days=w * sub.SWITCH_DAYS)
        rows, ev, _, _ = rows_of(settings, purchases, start, start + timedelta(days=sub.SWITCH_DAYS), params,
                                 new_only=False, exclude_bought=False)
        train += [(j, c, x, ev) for j, c, x in rows]
    test, ev, _cat, _owns = rows_of(settings, purchases, VALIDATION_CUT, VALIDATION_CUT + timedelta(days=TRUTH_DAYS),
                                    params, new_only=False, exclude_bought=False)
    new_item = np.array([not np.isin(ev.chosen[j], ev.bought[j]) for j in range(len(ev.customers))])
    print(f"training events {sum(x is not None for _, _, x, _ in train)}, validation events {len(ev.customers)}")
    print(f"{'ranker':48s} {'events':>7s} {'rows':>9s} {'fit s':>6s} {'any dep.':>9s} {'new item':>9s}")
    for objective, share in VARIANTS:
        x, labels, sizes = blocks(train, share)
        started = time.perf_counter()
        gbm = replace(sub.RANKER_GBM, objective=objective)
        model = fit_lambdarank(x, labels, sizes, FEATURE_NAMES, gbm, eval_at=3)  # binary: the groups unused
        took = time.perf_counter() - started
        h = np.zeros(len(ev.customers))
        for j, cands, xt in test:
            if xt is not None:
                h[j] = ev.chosen[j] in cands[np.argsort(-model.logit(xt), kind="stable")][:3]
        print(f"{objective + ', share of events ' + format(share, 'g'):48s} {len(sizes):7d} {len(x):9d} "
              f"{took:6.1f} {h.mean():9.3f} {h[new_item].mean():9.3f}", flush=True)


if __name__ == "__main__":
    main()
