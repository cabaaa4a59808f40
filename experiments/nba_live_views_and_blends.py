"""Does the next-best-action ranker gain from the live customer views (customer_activity, customer_repertoire) read
at request time, from the coupon's repeat-purchase cycle, or from blending it with the best rule?

Command: `PANTRY_DATA_DIR=.pantry .venv/bin/python -m experiments.nba_live_views_and_blends`: the protocol of
experiments/nba_relative_columns.py (validation cuts 30 / 61 / 92 days before the test cut, every redemption from the
cut to the test cut with the tables frozen at the cut, the ranker on the monthly snapshots of the 120 days before
the cut, each variant fitted with 3 bagging seeds, hit@3 averaged; never the test period). Variants against the
served columns:
- live views, point in time: for every redemption on day d (training and validation alike), the rows serving would
  read that day, replayed from the purchases strictly before d exactly as the stream builds them:
  customer_activity (orders and spend in the 7 and 28 days before d, days since the last order; basket time = its
  first line, as streaming/features/customer.py) and customer_repertoire scored per coupon (the replay of
  experiments/nba_event_time_features.py);
- new: the coupon's products' repeat-purchase cycle against the days since the customer last bought one of them
  (from the tables' history at the cut, aged to the request day, so serving could compute it from its tables):
  days since last bought, the mean gap between the customer's baskets with them, their ratio ("due") and its
  distance from 1 in log;
- new: two-stage and blended orders of the served ranker and the best rule (redeemed-before, then affinity): the
  rule's top N re-ordered by the ranker, and rank fusion (ranker's rank + a x rule's rank).

Result (2026-12-04, cuts 2017-09-01 / 08-01 / 07-01; 223 / 647 / 694 redemptions; 4 min on the shared 2-core
machine): the rule 0.144 / 0.182 / 0.203; the served columns 0.215 / 0.192 / 0.211; + live customer_activity 0.220 /
0.189 / 0.211; + live customer_activity and customer_repertoire 0.221 / 0.193 / 0.207; + repeat-purchase cycle
0.206 / 0.187 / 0.200; + live views and cycle 0.206 / 0.180 / 0.212. No variant is at least as good as the served
columns on every cut, and the best mean gain (activity + repertoire, +0.0006) is a fraction of one redemption per
cut, against seed spreads of 0.02-0.04: the served ranker does not read the live views (what a shopper bought in the
days before a redemption is already in the affinity at the cut, experiments/nba_event_time_features.py).
Blends, with `--blends` (the served columns with 10 seeds; in brackets, over the seeds, the redemptions the blend
hit and the ranker missed : the reverse): the ranker alone 0.209 / 0.194 / 0.210; the rule's top 5 ordered by the
ranker 0.158 / 0.178 / 0.203 (145:260, 203:307, 182:231); top 10 0.185 / 0.191 / 0.208 (55:109, 57:74, 20:35);
top 20 0.209 / 0.195 / 0.210 (12:13, 5:0, 4:3: the same answers bar 37 of 15,640 scored redemptions); rank fusion
ranker + 0.25 x rule 0.201 / 0.195 / 0.208 (36:54, 55:49, 43:53), + 0.5 x 0.186 / 0.192 / 0.208, + 1 x 0.171 /
0.192 / 0.208. The more of the rule's order a blend keeps, the closer it gets to the rule's lower hit@3: none is
adopted. Rerun: the same command (and `--blends`).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from datetime import timedelta

import numpy as np
import pandas as pd

from experiments.nba_event_time_features import SERVED, Lines, event_columns
from experiments.nba_relative_columns import SEEDS, VALIDATION_DAYS_BEFORE_TEST
from pantry.models.next_best_action import FEATURE_NAMES, Tables
from pantry.settings import Settings, get_settings
from training import nba
from training.data import load_purchases, to_days
from training.evaluate_nba import REDEEMED_THEN_AFFINITY, rule_orders
from training.protocol import NBA_CUT

ACTIVITY = ("log_orders_7d", "log_orders_28d", "log_spend_7d", "log_spend_28d", "log_days_since_last_order")
CYCLE = ("log_days_since_bought", "log_cycle_days", "due_ratio", "abs_log_due")
BLEND_SEEDS = tuple(range(10))
NEVER = 6.0  # log1p(days) for "never" (longer than the year of data)


class Baskets:
    """Per customer: basket times (first line) and spend, sorted by time (the stream's customer_activity state)."""

    def __init__(self, purchases: pd.DataFrame):
        b = purchases.groupby(["customer_id", "basket_id"]).agg(t=("day", "min"), spend=("sales_value", "sum"))
        b = b.reset_index().sort_values(["customer_id", "t"], kind="stable")
        self.customers, self.starts = np.unique(b["customer_id"].to_numpy(), return_index=True)
        self.ends = np.append(self.starts[1:], len(b))
        self.t, self.spend = b["t"].to_numpy(), b["spend"].to_numpy()

    def activity(self, customer: int, day: float) -> np.ndarray:
        """The ACTIVITY columns of the customer_activity row as of `day` (baskets strictly before it)."""
        out = np.array([0.0, 0.0, 0.0, 0.0, NEVER], dtype=np.float32)
        i = int(np.searchsorted(self.customers, customer))
        if i >= len(self.customers) or self.customers[i] != customer:
            return out
        a, b = self.starts[i], self.ends[i]
        cut = a + int(np.searchsorted(self.t[a:b], day))
        t, spend = self.t[a:cut], self.spend[a:cut]
        if len(t) == 0:
            return out
        w7, w28 = t > day - 7, t > day - 28
        out[:4] = np.log1p([w7.sum(), w28.sum(), max(spend[w7].sum(), 0.0), max(spend[w28].sum(), 0.0)])
        out[4] = np.log1p(day - t[-1])
        return out


def cycle_columns(t: Tables, lines: Lines, customer: int, coupons: np.ndarray, day: float) -> np.ndarray:
    """The CYCLE columns per coupon, from the customer's purchases before the tables' cut, aged to `day`."""
    n = len(coupons)
    out = np.zeros((n, len(CYCLE)), dtype=np.float32)
    out[:, 0], out[:, 1], out[:, 3] = NEVER, NEVER, 5.0
    product, pday, basket = lines.before(customer, t.ref_day)
    if len(product) == 0:
        return out
    lo, hi = t.cpn_prod_indptr[coupons], t.cpn_prod_indptr[coupons + 1]
    flat = np.concatenate([t.cpn_products[a:b] for a, b in zip(lo, hi, strict=True)])
    owner = np.repeat(np.arange(n), hi - lo)
    m = pd.DataFrame({"p": flat, "o": owner}).merge(pd.DataFrame({"p": product, "day": pday, "b": basket}), on="p")
    if m.empty:
        return out
    g = m.drop_duplicates(["o", "b"]).groupby("o")["day"].agg(["min", "max", "size"])
    o = g.index.to_numpy()
    since = day - g["max"].to_numpy()
    out[o, 0] = np.log1p(since)
    many = g["size"].to_numpy() >= 2
    cycle = (g["max"].to_numpy() - g["min"].to_numpy()) / np.maximum(g["size"].to_numpy() - 1, 1)
    cycle = np.maximum(cycle, 1.0)
    out[o[many], 1] = np.log1p(cycle[many])
    due = since / cycle
    out[o[many], 2] = np.clip(due[many], 0.0, 10.0)
    out[o[many], 3] = np.abs(np.log(np.maximum(due[many], 0.05)))
    return out


def blocks(settings: Settings, purchases: pd.DataFrame, lines: Lines, baskets: Baskets, cut, start, end):
    """(served columns + ACTIVITY + repertoire (SERVED) + CYCLE, target) per redemption in [start, end) with the
    tables at `cut`; an event without its coupon among the candidates is (None, -1) (a miss for every variant)."""
    t = nba.build_tables(settings, purchases[purchases["day"] < to_days(cut)], cut)
    out = []
    for row, cpn, _camp, x, target in nba.event_sets(t, nba.redemption_events(settings, start, end)):
        if x is None or target < 0:
            out.append((None, -1))
            continue
        c, day = int(row.customer_id), float(row.day)
        d0 = np.floor(day)  # a redemption's time is a date: the views as of the start of that day
        act = np.repeat(baskets.activity(c, d0)[None, :], len(cpn), axis=0)
        rep = event_columns(t, lines, c, cpn, day)[:, : len(SERVED)]
        out.append((np.hstack([x, act, rep, cycle_columns(t, lines, c, cpn, day)]), target))
    return out


def hit3(orders: list[np.ndarray | None], targets: list[int]) -> float:
    return float(np.mean([o is not None and t in o[:3] for o, t in zip(orders, targets, strict=True)]))


def rank_of(order: np.ndarray) -> np.ndarray:
    r = np.empty(len(order), dtype=np.float64)
    r[order] = np.arange(len(order))
    return r


def main() -> None:
    blends_only = "--blends" in sys.argv[1:]  # the served columns only, with BLEND_SEEDS: the blends' paired check
    seeds = BLEND_SEEDS if blends_only else SEEDS
    settings = get_settings()
    purchases = load_purchases(settings, NBA_CUT)
    lines, baskets = Lines(purchases), Baskets(purchases)
    names = FEATURE_NAMES + ACTIVITY + SERVED + CYCLE
    nb = len(FEATURE_NAMES)
    a0, r0, c0 = nb, nb + len(ACTIVITY), nb + len(ACTIVITY) + len(SERVED)
    served = list(range(nb))
    variants = {
        "served columns": served,
        "+ live customer_activity": served + list(range(a0, r0)),
        "+ live customer_activity and customer_repertoire": served + list(range(a0, c0)),
        "+ repeat-purchase cycle": served + list(range(c0, len(names))),
        "+ live views and cycle": list(range(len(names))),
    }
    if blends_only:
        variants = {"served columns": served}
    rng = np.random.default_rng(0)
    for days in VALIDATION_DAYS_BEFORE_TEST:
        start = time.perf_counter()
        cut = NBA_CUT - timedelta(days=days)
        train = []
        for back in range(nba.SNAPSHOT_DAYS, nba.TRAIN_DAYS + 1, nba.SNAPSHOT_DAYS):
            inner = cut - timedelta(days=back)
            got = blocks(settings, purchases, lines, baskets, inner, inner,
                         min(inner + timedelta(days=nba.SNAPSHOT_DAYS), cut))
            train += [b for b in got if b[1] >= 0]
        valid = blocks(settings, purchases, lines, baskets, cut, cut, NBA_CUT)
        targets = [tg for _x, tg in valid]
        rule = [None if x is None else rule_orders(x, rng)[REDEEMED_THEN_AFFINITY] for x, _t in valid]
        line = [f"cut {cut.date()} (train {len(train)}, validate {len(valid)} redemptions):",
                f"rule ({REDEEMED_THEN_AFFINITY}) {hit3(rule, targets):.4f}"]
        served_orders: list[list[np.ndarray | None]] = []
        for name, cols in variants.items():
            got = []
            for seed in seeds:
                model = nba.fit_ranker([x[:, cols] for x, _t in train], [tg for _x, tg in train],
                                       gbm=dataclasses.replace(nba.RANKER_GBM, seed=seed),
                                       names=tuple(names[c] for c in cols))
                orders = [None if x is None else np.argsort(-model.logit(x[:, cols]), kind="stable")
                          for x, _t in valid]
                if name == "served columns":
                    served_orders.append(orders)
                got.append(hit3(orders, targets))
            line.append(f"{name} {np.mean(got):.4f} (seeds {', '.join(f'{g:.3f}' for g in got)})")
        blends = {
            **{f"rule's top {n}, ordered by the ranker": ("top", n) for n in (5, 10, 20)},
            **{f"rank fusion: ranker rank + {a:g} x rule rank": ("fuse", a) for a in (0.25, 0.5, 1.0)},
        }
        for name, (kind, param) in blends.items():
            got, won, lost = [], 0, 0
            for orders in served_orders:
                mixed = []
                for m, r in zip(orders, rule, strict=True):
                    if m is None:
                        mixed.append(None)
                        continue
                    mr, rr = rank_of(m), rank_of(r)
                    key = np.where(rr < param, mr, len(m) + rr) if kind == "top" else mr + param * rr + 1e-6 * mr
                    mixed.append(np.argsort(key, kind="stable"))
                got.append(hit3(mixed, targets))
                for a, b, tg in zip(mixed, orders, targets, strict=True):  # paired: this blend against the ranker
                    hit_a, hit_b = a is not None and tg in a[:3], b is not None and tg in b[:3]
                    won, lost = won + (hit_a and not hit_b), lost + (hit_b and not hit_a)
            line.append(f"{name} {np.mean(got):.4f} (seeds {', '.join(f'{g:.3f}' for g in got)}; "
                        f"over the seeds, hits the ranker missed {won}, misses where it hit {lost})")
        print("\n  ".join(line) + f"\n  ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
