"""Would another ranking objective or leaf size serve next best action better than the served lambdarank?

Command: `PANTRY_DATA_DIR=.pantry .venv/bin/python -m experiments.nba_objectives`: the protocol of
experiments/nba_relative_columns.py (validation cuts 30 / 61 / 92 days before the test cut, every redemption from the
cut to the test cut with the tables frozen at the cut, the served training set, 3 bagging seeds, hit@3 averaged;
never the test period). Variants: LightGBM's cross-entropy NDCG objective (`rank_xendcg`, said to suit few, noisy
lists), a smaller and a larger minimum leaf, and more, slower trees.

Result (2026-12-04, cuts 2017-09-01 / 08-01 / 07-01; 223 / 647 / 694 redemptions; 3.5 min on the shared 2-core
machine): served 0.215 / 0.192 / 0.211; rank_xendcg 0.200 / 0.181 / 0.208; min leaf 20 0.217 / 0.188 / 0.225; min
leaf 150 0.215 / 0.191 / 0.211; 300 trees at lr 0.02 0.203 / 0.191 / 0.212. None is at least as good on every cut
(min leaf 20 gains 0.014 on one cut and loses 0.005 on another, within the seeds' spread of 0.02-0.04): the served
setting stays.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import timedelta

import numpy as np

from experiments.nba_relative_columns import SEEDS, VALIDATION_DAYS_BEFORE_TEST, hit3
from pantry.settings import get_settings
from training import nba
from training.data import load_purchases
from training.protocol import NBA_CUT

SERVED = nba.RANKER_GBM
VARIANTS = {
    "served (lambdarank 100 trees x 7 leaves, lr 0.05, min leaf 50)": SERVED,
    "rank_xendcg, same trees": dataclasses.replace(SERVED, objective="rank_xendcg"),
    "lambdarank, min leaf 20": dataclasses.replace(SERVED, min_child_samples=20),
    "lambdarank, min leaf 150": dataclasses.replace(SERVED, min_child_samples=150),
    "lambdarank, 300 trees, lr 0.02": dataclasses.replace(SERVED, n_trees=300, learning_rate=0.02),
}


def main() -> None:
    settings = get_settings()
    purchases = load_purchases(settings, NBA_CUT)
    for days in VALIDATION_DAYS_BEFORE_TEST:
        start = time.perf_counter()
        cut = NBA_CUT - timedelta(days=days)
        xs, pos = nba.training_groups(settings, purchases, cut)
        tables = nba.build_tables(settings, purchases, cut)
        events = nba.redemption_events(settings, cut, NBA_CUT)
        valid = [(x, t) for _r, _c, _k, x, t in nba.event_sets(tables, events) if x is not None and t >= 0]
        vx, vt = [x for x, _t in valid], [t for _x, t in valid]
        line = [f"cut {cut.date()} (train {len(xs)}, validate {len(events)} redemptions):"]
        for name, params in VARIANTS.items():
            got = []
            for seed in SEEDS:
                model = nba.fit_ranker(xs, pos, gbm=dataclasses.replace(params, seed=seed))
                got.append(hit3([model.logit(x) for x in vx], vt, len(events)))
            line.append(f"{name} {np.mean(got):.4f} (seeds {', '.join(f'{g:.3f}' for g in got)})")
        print("\n  ".join(line) + f"\n  ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
