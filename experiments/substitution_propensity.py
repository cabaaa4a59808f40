"""How far can knowing who switches to a new item take the served substitution list, and how well can it be known?

Same protocol and cut as experiments/substitution_novelty.py (rankers trained before VALIDATION_CUT, scored on the
two served protocols of the 35 days after it, candidates = pool's first 20 + own items). Printed:
- the any-departure events split by truth (an item bought before / never bought): the served ranker's and the own
  rule's hit@3 on each part;
- ceilings with the group known in advance: on any departure, the ranker's top 3 among the own items when the truth
  is one, among the never-bought ones otherwise; on the new-item protocol, the ranker's top 3 never-bought items
  (no slot given to an item bought before): what a perfect "who switches" predictor could reach;
- how well the group can be predicted: a LightGBM classifier (50 trees x 15 leaves) of "the departure is to a
  never-bought item" on case-level columns (the customer's and the type's novelty, the customer's lines and own
  items in the type, the usual item's share), trained on the training windows' departures; its AUC on the test's;
- the gated list it allows: the ranker's top 3 never-bought items when the predicted probability is above a
  threshold, the ranker's top 3 otherwise, on both protocols.

Command: `PANTRY_DATA_DIR=.pantry nice -n 10 .venv/bin/python -m experiments.substitution_propensity [CUT]`
(~5 min on 2 cores). Results: docs/DECISIONS.md "Can the substitution ranker tell who switches to a new item?".
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime, timedelta

import lightgbm as lgb
import numpy as np

from experiments.substitution_novelty import (
    EXTRA_NAMES,
    TRUTH_DAYS,
    VALIDATION_CUT,
    blocks,
    fit,
    served_rows,
)
from pantry.models.substitution_features import FEATURE_NAMES
from pantry.settings import get_settings
from training import als
from training import substitutions as sub
from training.data import load_purchases

N_POOL = 20
CASE_COLUMNS = ("cust_novelty", "cust_type_novelty", "type_novelty", "log_cust_type_lines")
CASE_FEATURES = ("customer_usual_share", "log_customer_own_in_type")


def case_rows(bl):
    """Per event: (case-level columns, truth is an item bought before) over events with rows."""
    cols = [len(FEATURE_NAMES) + EXTRA_NAMES.index(n) for n in CASE_COLUMNS]
    cols += [FEATURE_NAMES.index(n) for n in CASE_FEATURES]
    x, y = [], []
    for b in bl:
        if b is None:
            continue
        x.append(b[1][0, cols])
        y.append(b[2] in set(b[4].tolist()))
    return np.array(x, dtype=np.float32), np.array(y, dtype=bool)


def auc(score: np.ndarray, y: np.ndarray) -> float:
    order = np.argsort(score, kind="stable")
    ranks = np.empty(len(score))
    ranks[order] = np.arange(1, len(score) + 1)
    pos = y.sum()
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * (len(y) - pos)))


def main() -> None:
    cut = datetime.fromisoformat(sys.argv[1]).replace(tzinfo=UTC) if len(sys.argv) > 1 else VALIDATION_CUT
    settings = get_settings()
    params = als.AlsParams()
    purchases = load_purchases(settings, cut + timedelta(days=TRUTH_DAYS))
    started = time.perf_counter()
    train = []
    for w in range(1, sub.WINDOWS + 1):
        start = cut - timedelta(days=w * sub.SWITCH_DAYS)
        train += blocks(settings, purchases, start, start + timedelta(days=sub.SWITCH_DAYS), params, False,
                        sub.RANKER_EVENTS_PER_WINDOW)[0]
    cols = list(range(len(FEATURE_NAMES)))
    model = fit(train, cols)
    xt, yt = case_rows(train)
    clf = lgb.LGBMClassifier(n_estimators=50, num_leaves=15, learning_rate=0.1, verbose=-1)
    clf.fit(xt, ~yt)  # 1 = the departure is to a never-bought item
    end = cut + timedelta(days=TRUTH_DAYS)
    tests = {"new item": blocks(settings, purchases, cut, end, params, True, None)[0],
             "any departure": blocks(settings, purchases, cut, end, params, False, None)[0]}
    print(f"trained in {time.perf_counter() - started:.0f} s")
    out: dict[str, dict[str, np.ndarray]] = {}
    for proto, test in tests.items():
        n = len(test)
        r = {k: np.zeros(n) for k in ("model", "rule_own", "own_truth", "known_group", "never_only", "p_new")}
        gated = {t: np.zeros(n) for t in (0.5, 0.6, 0.7, 0.8)}
        for k, b in enumerate(test):
            if b is None:
                continue
            cands, x, chosen, mine, bought = b
            at = served_rows(b, N_POOL)
            c, score = cands[at], model.logit(x[at][:, cols])
            old = np.isin(c, bought)
            top = c[np.argsort(-score, kind="stable")[:3]]
            never = c[~old][np.argsort(-score[~old], kind="stable")[:3]]
            own_top = c[old][np.argsort(-score[old], kind="stable")[:3]]
            truth_old = chosen in set(bought.tolist())
            r["model"][k] = chosen in top
            r["own_truth"][k] = truth_old
            r["known_group"][k] = chosen in (own_top if truth_old else never)
            r["never_only"][k] = chosen in never
            pool = cands[: sub.POOL]
            r["rule_own"][k] = chosen in list(dict.fromkeys([*mine.tolist(), *pool.tolist()]))[:3]
            p = float(clf.predict_proba(case_rows([b])[0])[0, 1])
            r["p_new"][k] = p
            for t in gated:
                gated[t][k] = chosen in (never if p > t else top)
        out[proto] = r | {f"gated at {t}": g for t, g in gated.items()}
    dep = out["any departure"]
    own = dep["own_truth"] > 0
    print(f"any departure: {len(own)} events, truth an item bought before {own.mean():.3f}")
    print(f"  model hit@3 on those {dep['model'][own].mean():.3f}, on the new ones {dep['model'][~own].mean():.3f}")
    print(f"  own rule on those {dep['rule_own'][own].mean():.3f}, on the new ones {dep['rule_own'][~own].mean():.3f}")
    print(f"  ceiling with the group known: {dep['known_group'].mean():.3f}")
    print(f"new item: ranker's top 3 never-bought {out['new item']['never_only'].mean():.3f} "
          f"(served list {out['new item']['model'].mean():.3f})")
    print(f"predicting 'to a never-bought item' on the test's departures: AUC {auc(dep['p_new'], ~own):.3f} "
          f"(train share {(~yt).mean():.3f})")
    print(f"{'list':30s} {'new item':>9s} {'any departure':>14s}")
    for name in ("model", *(f"gated at {t}" for t in (0.5, 0.6, 0.7, 0.8))):
        print(f"{name:30s} {out['new item'][name].mean():9.3f} {dep[name].mean():14.3f}")
    print(f"done in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
