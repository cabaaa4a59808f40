"""The evaluation protocols' fixed points (set by the issue): the test cuts, k, the customer segments, the issue
author's baseline figures and the targets. Training code that must stay before a test cut reads them from here."""

from __future__ import annotations

from datetime import UTC, datetime

REC_CUT = datetime(2017, 11, 26, 14, 56, 44, tzinfo=UTC)  # 90% quantile of transaction time
SUB_CUT = datetime(2017, 11, 1, tzinfo=UTC)
NBA_CUT = datetime(2017, 10, 1, tzinfo=UTC)
K = 10
SEGMENTS = ((0, 20, "light (<20 baskets)"), (20, 80, "regular (20-79)"), (80, 10**9, "frequent (80+)"))

ISSUE_BASELINES = {
    "recommender": {"popularity": 0.163, "ALS (bm25, 64 factors)": 0.220, "most frequent items": 0.375,
                    "decayed count (90 d half-life)": 0.397, "naive blend decayed + ALS": 0.387},
    "substitutions": {"type popularity": 0.274, "ALS similarity + type popularity": 0.312},
    "next_best_action": {"random": 0.031, "past-purchase affinity": 0.138, "coupon product popularity": 0.153,
                         "redeemed-before, then affinity": 0.154},
}
TARGETS = {"for_you precision@10": 0.43, "substitutions hit@3": 0.36, "next_best_action hit@3": 0.25,
           "discover vs never-bought popularity": 1.5, "complete_basket vs best baseline": 1.3,
           "next_best_action vs best rule": 1.15}
