"""Does the next-best-action ranker gain from denser training snapshots (every 15 or 10 days instead of 30, each
with the redemptions of the 30 days after it, so every training redemption is seen with features of several ages)?

Command: `PANTRY_DATA_DIR=.pantry .venv/bin/python -m experiments.nba_denser_snapshots`: the protocol of
experiments/nba_relative_columns.py (validation cuts 30 / 61 / 92 days before the test cut, every redemption from the
cut to the test cut with the tables frozen at the cut, 120 training days, 3 bagging seeds, hit@3 averaged; never
the test period).

Result (2026-12-04, cuts 2017-09-01 / 08-01 / 07-01; 223 / 647 / 694 redemptions; 4.5 min on the shared 2-core
machine): every 30 days (served; 891 / 486 / 470 training groups) 0.215 / 0.192 / 0.211; every 15 days (1,643 / 963
/ 928) 0.200 / 0.186 / 0.206; every 10 days (2,412 / 1,438 / 1,381) 0.196 / 0.184 / 0.214. More groups are the same
redemptions again with staler or fresher features, not new decisions: no gain, the served 30 days stay.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import timedelta

import numpy as np

from experiments.nba_relative_columns import SEEDS, VALIDATION_DAYS_BEFORE_TEST, hit3
from pantry.settings import Settings, get_settings
from training import nba
from training.data import load_purchases
from training.protocol import NBA_CUT

STEPS_DAYS = (30, 15, 10)  # 30 = the served training set


def groups(settings: Settings, purchases, until, step: int) -> tuple[list[np.ndarray], list[int]]:
    xs, pos = [], []
    for back in range(step, nba.TRAIN_DAYS + 1, step):
        inner = until - timedelta(days=back)
        window = nba.redemption_events(settings, inner, min(inner + timedelta(days=nba.SNAPSHOT_DAYS), until))
        for _row, _cpn, _camp, x, target in nba.event_sets(nba.build_tables(settings, purchases, inner), window):
            if x is not None and target >= 0:
                xs.append(x)
                pos.append(target)
    return xs, pos


def main() -> None:
    settings = get_settings()
    purchases = load_purchases(settings, NBA_CUT)
    for days in VALIDATION_DAYS_BEFORE_TEST:
        start = time.perf_counter()
        cut = NBA_CUT - timedelta(days=days)
        tables = nba.build_tables(settings, purchases, cut)
        events = nba.redemption_events(settings, cut, NBA_CUT)
        valid = [(x, t) for _r, _c, _k, x, t in nba.event_sets(tables, events) if x is not None and t >= 0]
        vx, vt = [x for x, _t in valid], [t for _x, t in valid]
        line = [f"cut {cut.date()} (validate {len(events)} redemptions):"]
        for step in STEPS_DAYS:
            xs, pos = groups(settings, purchases, cut, step)
            got = []
            for seed in SEEDS:
                model = nba.fit_ranker(xs, pos, gbm=dataclasses.replace(nba.RANKER_GBM, seed=seed))
                got.append(hit3([model.logit(x) for x in vx], vt, len(events)))
            line.append(f"snapshots every {step} days ({len(xs)} training groups) {np.mean(got):.4f} "
                        f"(seeds {', '.join(f'{g:.3f}' for g in got)})")
        print("\n  ".join(line) + f"\n  ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
