"""More ideas for the next-best-action ranker after the relative columns (none kept).

Command: `PANTRY_DATA_DIR=... .venv/bin/python -m experiments.nba_more_columns`: the protocol of
experiments/nba_relative_columns.py (validation cuts 30 / 61 / 92 days before the test cut, every redemption from
the cut to the test cut with features frozen at the cut, ranker on the monthly snapshots of the 120 days before the
cut, hit@3 averaged over 3 bagging seeds). Variants against the served columns:
- product-overlap columns: coupons are new with each campaign, their products are not. With J = the Jaccard overlap
  of two coupons' product sets: J-weighted redemptions of all coupons before the cut (`log_similar_redemptions`),
  the best J to a coupon the customer redeemed (`similar_redeemed_by_customer`), the J-weighted sum over them
  (`log_customer_similar_redemptions`), and the customer's past redemptions in campaigns of the candidate's type;
- longer label windows per snapshot (60 / 90 days: more, staler training redemptions, like the test's 3 months);
- fewer columns (the 7 of least gain, the campaign-type columns).

Result (recorded in docs/MODEL_REPORT.md when measured; cuts 2017-09-01 / 08-01 / 07-01; served 0.215 / 0.192 /
0.211): product-overlap and campaign-type columns 0.220 / 0.180 / 0.201; the best overlap alone 0.223 / 0.186 /
0.207; past redemptions in the candidate's campaign type 0.212 / 0.177 / 0.209; 60- or 90-day labels 0.190 / 0.181 /
0.197 and 0.197 / 0.176 / 0.205; without the 7 columns of least gain 0.205 / 0.186 / 0.205. Why it stops here:
72-76% of validation redemptions are several coupons redeemed by one customer on one day, 17-19% of redeemed coupons
cover nothing the customer ever bought (no purchase-based ranker can place them), the redeemed coupon's median rank
is 9-10 of ~207, and almost all validation redemptions fall in one type-A campaign (633 of 647, 215 of 223), so the
cuts hold little variety to learn from. Rerun with the same command when the script moved here: the same figures
to the third decimal (6 min); the variant without the campaign-type columns, not recorded before, gave 0.214 / 0.188
/ 0.212.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import timedelta

import numpy as np
import pandas as pd
import scipy.sparse as sp

from experiments.nba_relative_columns import SEEDS, VALIDATION_DAYS_BEFORE_TEST, hit3
from pantry import dataset
from pantry.models._shared import lookup
from pantry.models.next_best_action import FEATURE_NAMES, Tables
from pantry.settings import Settings, get_settings
from training import nba
from training.data import load_purchases
from training.protocol import NBA_CUT

EXTRA_NAMES = ("log_similar_redemptions", "similar_redeemed_by_customer", "log_customer_similar_redemptions",
               "log_customer_type_redemptions")
WEAK = ("log_affinity_recent", "redeemed_before", "type_a", "type_b", "type_c", "log_customer_redemptions",
        "log_days_to_end")


def coupon_overlap(settings: Settings, coupons: np.ndarray) -> np.ndarray:
    cp = dataset.read_table(settings, "coupons")[["coupon_upc", "product_id"]].drop_duplicates()
    rows = np.searchsorted(coupons, cp["coupon_upc"].to_numpy(np.int64))
    cols, products = pd.factorize(cp["product_id"])
    a = sp.csr_matrix((np.ones(len(cp), dtype=np.float32), (rows, cols)), shape=(len(coupons), len(products)))
    inter = (a @ a.T).toarray()
    size = np.asarray(a.sum(axis=1)).ravel()
    union = size[:, None] + size[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1.0), 0.0).astype(np.float32)


def customer_type_redemptions(settings: Settings, t: Tables, cut) -> np.ndarray:
    red = dataset.read_table(settings, "coupon_redemptions")
    red = red[red["redemption_date"] < pd.Timestamp(cut)]
    desc = dataset.read_table(settings, "campaign_descriptions")[["campaign_id", "campaign_type"]]
    red = red.merge(desc, on="campaign_id")
    red = red[red["customer_id"].isin(t.customers)]
    out = np.zeros((len(t.customers), 3), dtype=np.float32)
    ci = np.searchsorted(t.customers, red["customer_id"].to_numpy(np.int64))
    np.add.at(out, (ci, red["campaign_type"].map({"A": 0, "B": 1, "C": 2}).to_numpy(np.int64)), 1.0)
    return out


def extra_columns(t: Tables, overlap: np.ndarray, type_red: np.ndarray, customer: int, cpn: np.ndarray,
                  camp: np.ndarray) -> np.ndarray:
    out = np.zeros((len(cpn), len(EXTRA_NAMES)), dtype=np.float32)
    out[:, 0] = np.log1p(overlap[cpn] @ t.coupon_redemptions)
    u = lookup(t.customers, customer)
    if u >= 0:
        sl = slice(t.pair_indptr[u], t.pair_indptr[u + 1])
        mask = t.pair_redeemed[sl] > 0
        redeemed = t.pair_coupon[sl][mask]
        if len(redeemed):
            sim = overlap[np.ix_(cpn, redeemed)]
            out[:, 1] = sim.max(axis=1)
            out[:, 2] = np.log1p(sim @ t.pair_redeemed[sl][mask])
        out[:, 3] = np.log1p(type_red[u, t.campaign_type[camp]])
    return out


def event_blocks(settings: Settings, t: Tables, events: pd.DataFrame, overlap: np.ndarray, cut):
    type_red = customer_type_redemptions(settings, t, cut)
    xs, pos = [], []
    for row, cpn, camp, x, target in nba.event_sets(t, events):
        if x is None or target < 0:
            continue
        xs.append(np.hstack([x, extra_columns(t, overlap, type_red, int(row.customer_id), cpn, camp)]))
        pos.append(target)
    return xs, pos


def training_blocks(settings: Settings, purchases: pd.DataFrame, until, overlap: np.ndarray, label_days: int):
    xs, pos = [], []
    for back in range(nba.SNAPSHOT_DAYS, nba.TRAIN_DAYS + 1, nba.SNAPSHOT_DAYS):
        inner = until - timedelta(days=back)
        window = nba.redemption_events(settings, inner, min(inner + timedelta(days=label_days), until))
        wx, wp = event_blocks(settings, nba.build_tables(settings, purchases, inner), window, overlap, inner)
        xs += wx
        pos += wp
    return xs, pos


def main() -> None:
    settings = get_settings()
    purchases = load_purchases(settings, NBA_CUT)
    names = FEATURE_NAMES + EXTRA_NAMES
    served = list(range(len(FEATURE_NAMES)))
    variants = {  # name: (columns, label days per snapshot)
        "served columns": (served, nba.SNAPSHOT_DAYS),
        "+ product-overlap and campaign-type columns": (list(range(len(names))), nba.SNAPSHOT_DAYS),
        **{f"+ {n}": ([*served, len(FEATURE_NAMES) + k], nba.SNAPSHOT_DAYS) for k, n in enumerate(EXTRA_NAMES)},
        "60-day labels per snapshot": (served, 60),
        "90-day labels per snapshot": (served, 90),
        "without the 7 columns of least gain": ([k for k in served if names[k] not in WEAK], nba.SNAPSHOT_DAYS),
        "without the campaign-type columns": ([k for k in served if not names[k].startswith("type_")],
                                              nba.SNAPSHOT_DAYS),
    }
    overlap = None
    for days in VALIDATION_DAYS_BEFORE_TEST:
        start = time.perf_counter()
        cut = NBA_CUT - timedelta(days=days)
        tables = nba.build_tables(settings, purchases, cut)
        overlap = coupon_overlap(settings, tables.coupons) if overlap is None else overlap
        groups = {label: training_blocks(settings, purchases, cut, overlap, label)
                  for label in sorted({la for _c, la in variants.values()})}
        events = nba.redemption_events(settings, cut, NBA_CUT)
        vx, vt = event_blocks(settings, tables, events, overlap, cut)
        n = len(events)
        line = [f"cut {cut.date()} (validate {n} redemptions):"]
        for name, (cols, label_days) in variants.items():
            xs, pos = groups[label_days]
            got = []
            for seed in SEEDS:
                params = dataclasses.replace(nba.RANKER_GBM, seed=seed)
                model = nba.fit_ranker([x[:, cols] for x in xs], pos, gbm=params, names=tuple(names[c] for c in cols))
                got.append(hit3([model.logit(x[:, cols]) for x in vx], vt, n))
            line.append(f"{name} ({len(xs)} training redemptions) {np.mean(got):.4f} "
                        f"(seeds {', '.join(f'{g:.3f}' for g in got)})")
        print("\n  ".join(line) + f"\n  ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
