"""Would a live count of each coupon's redemptions (everyone's, up to the request's day) help the next-best-action
ranker, where the served one counts them at the cut?

Command: `PANTRY_DATA_DIR=.pantry .venv/bin/python -m experiments.nba_live_coupon_redemptions`: the protocol of
experiments/nba_relative_columns.py (validation cuts 30 / 61 / 92 days before the test cut, every redemption from the
cut to the test cut, the tables frozen at the cut, 3 bagging seeds, hit@3 averaged; never the test period). Coupons
are new with each campaign, so a campaign that starts after the cut has no redemptions in the tables for the whole
month (or three) they serve; a stream could count them as they come (coupon_redemption events). Here, for every
redemption on day d (training and validation alike), from the redemptions strictly before d: `log_coupon_redemptions`
replaced by that live count (and the redemptions-per-buyer column recomputed from it), or the live count of the days
since the cut appended as a column.

Also: the customer's own redemptions counted up to the day (`redeemed_before` and `log_customer_redemptions`), and
both counts up to the day. `--10-seeds` fits each variant with 10 seeds instead of 3.

Result (2026-12-04, cuts 2017-09-01 / 08-01 / 07-01; 223 / 647 / 694 redemptions; 1.3 min, 4.5 min with 10 seeds on
the shared 2-core machine), 3 seeds: served 0.215 / 0.192 / 0.211; coupon redemptions up to the day 0.227 / 0.192 /
0.210; + since the cut 0.215 / 0.183 / 0.206; the customer's own redemptions up to the day 0.223 / 0.195 / 0.221
(both: not in that run). With 10 seeds: served 0.209 / 0.194 /
0.210; coupon counts 0.215 / 0.192 / 0.207; + since the cut 0.210 / 0.184 / 0.201; the customer's own 0.223 / 0.194
/ 0.213; both 0.221 / 0.200 / 0.208. The customer's own redemptions up to the day are the one lead: ahead on two cuts
(+0.014, +0.004) and level on the third (-0.0005, a third of a redemption) with 10 seeds, ahead on all three with 3.
Not adopted: not better on every cut, and serving has no live view of a shopper's redemptions to read (the stream
sees coupon_redemption events only for the outcome join); a `customer_activity`-like view of the coupons a shopper
redeemed would be its prerequisite.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from datetime import timedelta

import numpy as np
import pandas as pd

from experiments.nba_relative_columns import SEEDS, VALIDATION_DAYS_BEFORE_TEST, hit3
from pantry import dataset
from pantry.models.next_best_action import FEATURE_NAMES, Tables, relative_columns
from pantry.settings import Settings, get_settings
from training import nba
from training.data import DAY_S, load_purchases, to_days
from training.protocol import NBA_CUT

COUPON_REDEMPTIONS = FEATURE_NAMES.index("log_coupon_redemptions")
REDEEMED_BEFORE = FEATURE_NAMES.index("redeemed_before")
CUSTOMER_REDEMPTIONS = FEATURE_NAMES.index("log_customer_redemptions")


class Redemptions:
    """Every coupon's redemption days, sorted (for 'strictly before day d' counts)."""

    def __init__(self, settings: Settings):
        red = dataset.read_table(settings, "coupon_redemptions")
        day = red["redemption_date"].astype("int64").to_numpy() / 1e6 / DAY_S
        order = np.lexsort((day, red["coupon_upc"].to_numpy(np.int64)))
        self.coupon, self.day = red["coupon_upc"].to_numpy(np.int64)[order], day[order]
        self.customer = red["customer_id"].to_numpy(np.int64)[order]
        self.by_customer = np.argsort(self.customer, kind="stable")

    def of_customer(self, customer: int, coupons: np.ndarray, day: float) -> tuple[np.ndarray, float]:
        """The customer's redemptions of each coupon (upc) strictly before `day`, and of any coupon."""
        rows = self.by_customer[np.searchsorted(self.customer[self.by_customer], customer, side="left"):
                                np.searchsorted(self.customer[self.by_customer], customer, side="right")]
        rows = rows[self.day[rows] < day]
        mine = self.coupon[rows]
        return np.array([(mine == c).sum() for c in coupons], dtype=np.float32), float(len(rows))

    def before(self, coupons: np.ndarray, day: float) -> np.ndarray:
        """Redemptions of each coupon (upc) strictly before `day`."""
        lo = np.searchsorted(self.coupon, coupons, side="left")
        hi = np.searchsorted(self.coupon, coupons, side="right")
        return np.array([np.searchsorted(self.day[a:b], day) for a, b in zip(lo, hi, strict=True)], dtype=np.float32)


def blocks(settings: Settings, purchases: pd.DataFrame, reds: Redemptions, cut, start, end):
    """Per redemption: (coupon counts replaced, appended, the customer's own counts replaced, target); Nones and -1
    when it cannot be hit."""
    t: Tables = nba.build_tables(settings, purchases[purchases["day"] < to_days(cut)], cut)
    out = []
    for row, cpn, _camp, x, target in nba.event_sets(t, nba.redemption_events(settings, start, end)):
        if x is None or target < 0:
            out.append((None, None, None, None, -1))
            continue
        live = reds.before(t.coupons[cpn], float(np.floor(row.day)))
        since_cut = np.maximum(live - t.coupon_redemptions[cpn], 0.0)
        replaced = x.copy()
        replaced[:, COUPON_REDEMPTIONS] = np.log1p(live)
        relative_columns(replaced)
        appended = np.hstack([x, np.log1p(since_cut)[:, None]])
        pair, total = reds.of_customer(int(row.customer_id), t.coupons[cpn], float(np.floor(row.day)))
        own = x.copy()
        own[:, REDEEMED_BEFORE] = pair > 0
        own[:, CUSTOMER_REDEMPTIONS] = np.log1p(total)
        both = own.copy()
        both[:, COUPON_REDEMPTIONS] = np.log1p(live)
        relative_columns(both)
        out.append((replaced, appended, own, both, target))
    return out


def main() -> None:
    seeds = tuple(range(10)) if "--10-seeds" in sys.argv[1:] else SEEDS
    settings = get_settings()
    purchases = load_purchases(settings, NBA_CUT)
    reds = Redemptions(settings)
    for days in VALIDATION_DAYS_BEFORE_TEST:
        start = time.perf_counter()
        cut = NBA_CUT - timedelta(days=days)
        train = []
        for back in range(nba.SNAPSHOT_DAYS, nba.TRAIN_DAYS + 1, nba.SNAPSHOT_DAYS):
            inner = cut - timedelta(days=back)
            got = blocks(settings, purchases, reds, inner, inner, min(inner + timedelta(days=nba.SNAPSHOT_DAYS), cut))
            train += [b for b in got if b[-1] >= 0]
        valid = [b for b in blocks(settings, purchases, reds, cut, cut, NBA_CUT) if b[-1] >= 0]
        n = len(nba.redemption_events(settings, cut, NBA_CUT))
        vt = [b[-1] for b in valid]
        line = [f"cut {cut.date()} (train {len(train)}, validate {n} redemptions):"]
        variants = {  # name: (which block, column names)
            "served columns (frozen at the cut)": (-1, FEATURE_NAMES),
            "coupon redemptions counted up to the day": (0, FEATURE_NAMES),
            "+ coupon redemptions since the cut": (1, (*FEATURE_NAMES, "log_coupon_redemptions_since_cut")),
            "the customer's own redemptions counted up to the day": (2, FEATURE_NAMES),
            "both counted up to the day": (3, FEATURE_NAMES),
        }
        for name, (which, names) in variants.items():
            got = []
            for seed in seeds:
                pick = (lambda b: b[1][:, : len(FEATURE_NAMES)]) if which < 0 else (lambda b, w=which: b[w])
                model = nba.fit_ranker([pick(b) for b in train], [b[-1] for b in train],
                                       gbm=dataclasses.replace(nba.RANKER_GBM, seed=seed), names=names)
                got.append(hit3([model.logit(pick(b)) for b in valid], vt, n))
            line.append(f"{name} {np.mean(got):.4f} (seeds {', '.join(f'{g:.3f}' for g in got)})")
        print("\n  ".join(line) + f"\n  ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
