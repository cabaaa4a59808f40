"""The next-best-action protocol (cut 2017-10-01, every coupon redemption after it), baselines on the same events.

Candidates = the coupons of the customer's campaigns active on the redemption's day; features as of the cut (point
in time), the campaign calendar as of the day; hit@3 of the redeemed coupon. Events without candidates, or whose
coupon is not among them, count as misses for every method.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pantry.settings import Settings
from training import nba
from training.data import to_days
from training.protocol import NBA_CUT
from training.timing import Timer

REDEEMED_THEN_AFFINITY = "redeemed-before, then affinity"
RULE_NAMES = ("random", "past-purchase affinity", "coupon product popularity", REDEEMED_THEN_AFFINITY)


def rule_orders(x: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The baselines' orders of one redemption's candidates (rows of `nba.features`: column 1 decayed affinity,
    3 redeemed before, 5 buyers of the coupon's products)."""
    return {
        "random": rng.permutation(len(x)),
        "past-purchase affinity": np.lexsort((-x[:, 5], -x[:, 1])),
        "coupon product popularity": np.argsort(-x[:, 5], kind="stable"),
        REDEEMED_THEN_AFFINITY: np.lexsort((-x[:, 5], -x[:, 1], -x[:, 3])),
    }


def evaluate_nba(settings: Settings, purchases: pd.DataFrame, timer: Timer) -> dict[str, Any]:
    with timer.step("next_best_action eval: train + tables at the cut"):
        before = purchases[purchases["day"] < to_days(NBA_CUT)]
        ranker = nba.train_ranker(settings, before, NBA_CUT) or nba.prior_ranker()
        t = nba.build_tables(settings, purchases, NBA_CUT)
    events = nba.redemption_events(settings, NBA_CUT, None)
    rng = np.random.default_rng(0)
    names = ("model (served ranker)", *RULE_NAMES)
    hits = dict.fromkeys(names, 0.0)
    sizes = []
    with timer.step("next_best_action eval: rank redemptions"):
        # events without candidates or whose coupon is not among them still count: a miss for every method
        sets = [(x, target) for _row, _cpn, _camp, x, target in nba.event_sets(t, events)
                if x is not None and target >= 0]
        logits = ranker.logit(np.concatenate([x for x, _t in sets])) if sets else np.empty(0)
        offsets = np.cumsum([0] + [len(x) for x, _t in sets])
        for (x, target), lo, hi in zip(sets, offsets[:-1], offsets[1:], strict=True):
            sizes.append(len(x))
            orders = {"model (served ranker)": np.argsort(-logits[lo:hi], kind="stable"), **rule_orders(x, rng)}
            for name, order in orders.items():
                hits[name] += float(target in order[:3])
    n = len(events)
    return {
        "cut": NBA_CUT.isoformat(),
        "events": n,
        "events_with_candidates": len(sizes),
        "median_candidates": float(np.median(sizes)) if sizes else 0.0,
        "hit@3": {k: v / max(n, 1) for k, v in hits.items()},
        "ranker": nba.ranker_kind(ranker),
        "weights": ranker.params(),
    }
