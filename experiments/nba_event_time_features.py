"""Would point-in-time features as of each redemption (instead of frozen at the cut) help the next-best-action
ranker? (no)

Command: `PANTRY_DATA_DIR=... .venv/bin/python -m experiments.nba_event_time_features`: on the validation cuts
2017-09-01 and 2017-08-01 (redemptions up to the test cut; training snapshots of the 120 days before each cut, as
experiments/nba_relative_columns.py), every redemption on day d gets, from purchases strictly before d:
- what serving has at request time: the customer_repertoire row replayed exactly as the stream builds it (top 50
  products by purchase lines decayed with a 90-day half-life, plus the last 10 distinct products, scores as of the
  customer's last purchase), scored per coupon: its share of the row's total score, the number of the coupon's
  products in the row, the best rank of one of them;
- an upper bound serving does not have (the full history): days since the customer last bought any of the coupon's
  products, baskets with them in the last 14 and 56 days, their count decayed with a 30-day half-life.
Each variant is the served ranker's columns plus those, fitted with 3 seeds; hit@3 averaged.

Result (recorded in docs/MODEL_REPORT.md when measured; cuts 2017-09-01 / 08-01): the replayed live repertoire
0.229 / 0.187 vs 0.215 / 0.192 without (about +3 of 223 and -3 of 647 redemptions: no gain over both cuts); even the
full history up to the day 0.215 / 0.190. What a customer bought in the weeks just before a redemption adds nothing
measurable to the affinity at the cut, so the served ranker does not read the live views. Rerun with the same
command when the script moved here: the same figures to the third decimal (2 min 51 s).
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from pantry.models.next_best_action import FEATURE_NAMES, Tables
from pantry.settings import Settings, get_settings
from training import nba
from training.data import load_purchases, to_days
from training.protocol import NBA_CUT

REPERTOIRE_TOP, REPERTOIRE_RECENT, HALF_LIFE_DAYS = 50, 10, 90.0  # = streaming/features.py
REF_DAY = to_days(datetime(2017, 1, 1, tzinfo=UTC))  # = streaming's REPERTOIRE_REF_T
SERVED = ("rep_score_share", "rep_products", "rep_log_best_rank")
FULL_HISTORY = ("log_days_since_bought", "log_baskets_14d", "log_baskets_56d", "log_decayed_30d")
CUTS_DAYS_BEFORE_TEST = (30, 61)
SEEDS = (0, 1, 2)


class Lines:
    """Purchase lines per customer, sorted by time (for 'strictly before day d' slices)."""

    def __init__(self, purchases: pd.DataFrame):
        p = purchases.sort_values(["customer_id", "day"], kind="stable")
        self.customers, self.starts = np.unique(p["customer_id"].to_numpy(), return_index=True)
        self.ends = np.append(self.starts[1:], len(p))
        self.product, self.day = p["product_id"].to_numpy(), p["day"].to_numpy()
        self.basket = p["basket_id"].to_numpy()

    def before(self, customer: int, day: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        i = int(np.searchsorted(self.customers, customer))
        if i >= len(self.customers) or self.customers[i] != customer:
            return np.empty(0, np.int64), np.empty(0), np.empty(0, np.int64)
        a, b = self.starts[i], self.ends[i]
        cut = a + int(np.searchsorted(self.day[a:b], day))
        return self.product[a:cut], self.day[a:cut], self.basket[a:cut]


def replayed_repertoire(product: np.ndarray, day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(product) == 0:
        return np.empty(0, np.int64), np.empty(0)
    ids, inverse = np.unique(product, return_inverse=True)
    score = np.bincount(inverse, weights=np.power(2.0, (day - REF_DAY) / HALF_LIFE_DAYS))
    top = np.lexsort((ids, -score))[:REPERTOIRE_TOP]
    last = pd.Series(day).groupby(product).max()
    recent = sorted(zip(last.to_numpy(), last.index.to_numpy(), strict=True), reverse=True)[:REPERTOIRE_RECENT]
    chosen = set(ids[top].tolist())
    extra = np.array([p for _t, p in recent if p not in chosen], dtype=np.int64)
    out_ids = np.concatenate([ids[top], extra])
    out_scores = np.concatenate([score[top], score[np.searchsorted(ids, extra)]])
    order = np.lexsort((out_ids, -out_scores))
    return out_ids[order], out_scores[order] * np.power(2.0, -(day.max() - REF_DAY) / HALF_LIFE_DAYS)


def event_columns(t: Tables, lines: Lines, customer: int, coupons: np.ndarray, day: float) -> np.ndarray:
    d0 = np.floor(day)  # a redemption's time is a date: nothing on or after that day
    product, pday, basket = lines.before(customer, d0)
    n = len(coupons)
    out = np.zeros((n, len(SERVED) + len(FULL_HISTORY)), dtype=np.float32)
    out[:, len(SERVED)] = 6.0  # log1p(days since bought) when never bought
    lo, hi = t.cpn_prod_indptr[coupons], t.cpn_prod_indptr[coupons + 1]
    flat = np.concatenate([t.cpn_products[a:b] for a, b in zip(lo, hi, strict=True)])
    owner = np.repeat(np.arange(n), hi - lo)
    ids, scores = replayed_repertoire(product, pday)
    if len(ids):
        order = np.argsort(ids)
        pos = np.clip(np.searchsorted(ids[order], flat), 0, len(ids) - 1)
        hit = ids[order][pos] == flat
        out[:, 0] = np.bincount(owner[hit], weights=scores[order][pos[hit]], minlength=n) / max(scores.sum(), 1e-12)
        out[:, 1] = np.bincount(owner[hit], minlength=n)
        best = np.full(n, 99.0)
        np.minimum.at(best, owner[hit], order[pos[hit]].astype(np.float64))
        out[:, 2] = np.log1p(best)
    if len(product):
        m = pd.DataFrame({"p": flat, "o": owner}).merge(pd.DataFrame({"p": product, "day": pday, "b": basket}), on="p")
        m = m.drop_duplicates(["o", "b"])
        if len(m):
            g = m.groupby("o")["day"]
            last = g.max()
            out[last.index.to_numpy(), 3] = np.log1p(d0 - last.to_numpy())
            for col, days in ((4, 14), (5, 56)):
                got = m[m["day"] >= d0 - days].groupby("o").size()
                out[got.index.to_numpy(), col] = np.log1p(got.to_numpy())
            dec = m.assign(w=np.power(0.5, (d0 - m["day"]) / 30.0)).groupby("o")["w"].sum()
            out[dec.index.to_numpy(), 6] = np.log1p(dec.to_numpy())
    return out


def blocks(settings: Settings, purchases: pd.DataFrame, lines: Lines, cut: datetime, start: datetime,
           end: datetime) -> list[tuple[np.ndarray, int]]:
    t = nba.build_tables(settings, purchases[purchases["day"] < to_days(cut)], cut)
    out = []
    for row, cpn, _camp, x, target in nba.event_sets(t, nba.redemption_events(settings, start, end)):
        if x is None or target < 0:
            out.append((np.empty((0, 0)), -1))
            continue
        extra = event_columns(t, lines, int(row.customer_id), cpn, float(row.day))
        out.append((np.concatenate([x, extra], axis=1), target))
    return out


def main() -> None:
    settings = get_settings()
    purchases = load_purchases(settings, NBA_CUT)
    lines = Lines(purchases)
    names = FEATURE_NAMES + SERVED + FULL_HISTORY
    n_base = len(FEATURE_NAMES)
    variants = {
        "served ranker's columns (frozen at the cut)": list(range(n_base)),
        "+ replayed live repertoire (what serving has)": list(range(n_base + len(SERVED))),
        "+ full history before the day (upper bound)": list(range(n_base)) + list(range(n_base + len(SERVED),
                                                                                       len(names))),
    }
    for days in CUTS_DAYS_BEFORE_TEST:
        cut = NBA_CUT - timedelta(days=days)
        train = []
        for back in range(nba.SNAPSHOT_DAYS, nba.TRAIN_DAYS + 1, nba.SNAPSHOT_DAYS):
            inner = cut - timedelta(days=back)
            train += [b for b in blocks(settings, purchases, lines, inner, inner,
                                        min(inner + timedelta(days=nba.SNAPSHOT_DAYS), cut)) if b[1] >= 0]
        valid = blocks(settings, purchases, lines, cut, cut, NBA_CUT)
        line = [f"cut {cut.date()} (train {len(train)}, validate {len(valid)} redemptions):"]
        for name, cols in variants.items():
            got = []
            for seed in SEEDS:
                model = nba.fit_ranker([x[:, cols] for x, _t in train], [t for _x, t in train],
                                       gbm=dataclasses.replace(nba.RANKER_GBM, seed=seed),
                                       names=tuple(names[c] for c in cols))
                hits = [t >= 0 and t in np.argsort(-model.logit(x[:, cols]), kind="stable")[:3] for x, t in valid]
                got.append(float(np.mean(hits)))
            line.append(f"{name} {np.mean(got):.4f} (seeds {', '.join(f'{g:.3f}' for g in got)})")
        print("\n  ".join(line), flush=True)


if __name__ == "__main__":
    main()
