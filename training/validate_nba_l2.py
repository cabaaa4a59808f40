"""Picks the NBA ranker (conditional logit L2, LightGBM settings) on a validation cut before the test cut.

`PANTRY_DATA_DIR=... python -m training.validate_nba_l2`: snapshots before NBA_CUT - 30 d train, the redemptions
of the following 30 days (September) are scored (hit@3) for each candidate ranker. Never the test period.
"""

from __future__ import annotations

import time
from datetime import timedelta

import numpy as np

from pantry.settings import Settings
from training import nba
from training.data import load_purchases
from training.evaluate import NBA_CUT
from training.gbm import GbmParams

L2_GRID = (30.0, 300.0, 1000.0)
GBM_GRID = (
    GbmParams(objective="lambdarank", n_trees=100, num_leaves=7, learning_rate=0.05, min_child_samples=50),
    GbmParams(objective="lambdarank", n_trees=200, num_leaves=15, learning_rate=0.05, min_child_samples=50),
    GbmParams(objective="binary", n_trees=100, num_leaves=7, learning_rate=0.05, min_child_samples=50),
)


def main() -> None:
    settings = Settings()
    val_cut = NBA_CUT - timedelta(days=30)
    purchases = load_purchases(settings, NBA_CUT)
    xs, pos = nba.training_groups(settings, purchases, val_cut, live=True)
    tables = nba.build_tables(settings, purchases, val_cut)
    events = nba.redemption_events(settings, val_cut, NBA_CUT)
    live = nba.repertoires_at(settings, events, NBA_CUT)
    valid = [(x, t) for _r, _c, _k, x, t in nba.event_sets(tables, events, live)]
    print(f"training redemptions {len(xs)}, validation redemptions {len(valid)}")

    def hit3(model) -> float:
        hits = [0 if x is None or t < 0 else int(t in np.argsort(-model.logit(x), kind="stable")[:3])
                for x, t in valid]
        return float(np.mean(hits))

    names = nba.FEATURE_NAMES + nba.LIVE_FEATURE_NAMES
    with_live = nba.fit_ranker(xs, pos, gbm=GBM_GRID[0], names=names)
    hits = [0 if x is None or t < 0 else int(t in np.argsort(-with_live.logit(x), kind="stable")[:3])
            for x, t in valid]
    print(f"LightGBM {GBM_GRID[0].objective} with the live repertoire features (Feast): hit@3 {np.mean(hits):.4f}")
    n = len(nba.FEATURE_NAMES)
    xs = [x[:, :n] for x in xs]
    valid = [(None if x is None else x[:, :n], t) for x, t in valid]
    for l2 in L2_GRID:
        print(f"conditional logit L2 {l2:g}: hit@3 {hit3(nba.fit_ranker(xs, pos, gbm=None, l2=l2)):.4f}")
    for params in GBM_GRID:
        start = time.perf_counter()
        model = nba.fit_ranker(xs, pos, gbm=params)
        took = time.perf_counter() - start
        print(f"LightGBM {params.objective} {params.n_trees} trees x {params.num_leaves} leaves lr "
              f"{params.learning_rate}: hit@3 {hit3(model):.4f} (fit {took:.1f} s)")


if __name__ == "__main__":
    main()
