"""Picks the NBA ranker's L2 on a validation cut before the test cut (never on the test period).

`PANTRY_DATA_DIR=... python -m training.validate_nba_l2`: snapshots before NBA_CUT - 30 d train, the redemptions
of the following 30 days are scored (hit@3) for each L2.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from pantry.settings import Settings
from training import nba
from training.data import load_purchases
from training.evaluate import NBA_CUT
from training.logistic import fit_conditional_logit

L2_GRID = (30.0, 300.0, 1000.0)


def main() -> None:
    settings = Settings()
    val_cut = NBA_CUT - timedelta(days=30)
    purchases = load_purchases(settings, NBA_CUT)
    xs, ptr, pos = [], [0], []
    for back in range(nba.SNAPSHOT_DAYS, nba.TRAIN_DAYS + 1, nba.SNAPSHOT_DAYS):
        inner = val_cut - timedelta(days=back)
        tables = nba.build_tables(settings, purchases, inner)
        window = nba.redemption_events(settings, inner, inner + timedelta(days=nba.SNAPSHOT_DAYS))
        for _row, _cpn, _camp, x, target in nba.event_sets(tables, window):
            if x is None or target < 0:
                continue
            pos.append(ptr[-1] + target)
            xs.append(x)
            ptr.append(ptr[-1] + len(x))
    tables = nba.build_tables(settings, purchases, val_cut)
    valid = [(x, t) for _r, _c, _k, x, t in nba.event_sets(tables, nba.redemption_events(settings, val_cut, NBA_CUT))]
    print(f"validation redemptions {len(valid)}")
    for l2 in L2_GRID:
        model = fit_conditional_logit(np.concatenate(xs), np.array(ptr), np.array(pos), nba.FEATURE_NAMES, l2=l2)
        hits = [0 if x is None or t < 0 else int(t in np.argsort(-model.logit(x), kind="stable")[:3]) for x, t in valid]
        print(f"L2 {l2:g}: hit@3 {np.mean(hits):.4f}")


if __name__ == "__main__":
    main()
