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
  threshold, the ranker's top 3 otherwise, on both protocols;
- softer uses of it: the ranker's score + beta * logit(p) for the never-bought candidates (beta 0.25-1), and the
  probability as a ranker column (out of fold on the training windows: each window's from a classifier fitted on
  the other).

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
BETAS = (0.25, 0.5, 1.0)
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


def classifier(x: np.ndarray, y_old: np.ndarray) -> lgb.LGBMClassifier:
    clf = lgb.LGBMClassifier(n_estimators=50, num_leaves=15, learning_rate=0.1, verbose=-1)
    return clf.fit(x, ~y_old)  # 1 = the departure is to a never-bought item


def with_p(b, clf, p: float | None = None):
    """The block with the case's predicted probability of a never-bought item appended as a column."""
    p = float(clf.predict_proba(case_rows([b])[0])[0, 1]) if p is None else p
    return (b[0], np.hstack([b[1], np.full((len(b[0]), 1), p, dtype=np.float32)]), *b[2:])


def stacked_col(bl) -> int:
    return next(b[1].shape[1] for b in bl if b is not None) - 1


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
    clf = classifier(xt, yt)
    # the probability as a ranker column, out of fold: windows' blocks are contiguous in `train`
    half = len(train) // 2
    folds = (train[:half], train[half:])
    stacked = []
    for k, part in enumerate(folds):
        other = classifier(*case_rows(folds[1 - k]))
        stacked += [None if b is None else with_p(b, other) for b in part]
    p_model = fit(stacked, [*cols, stacked_col(stacked)])
    end = cut + timedelta(days=TRUTH_DAYS)
    tests = {"new item": blocks(settings, purchases, cut, end, params, True, None)[0],
             "any departure": blocks(settings, purchases, cut, end, params, False, None)[0]}
    print(f"trained in {time.perf_counter() - started:.0f} s")
    out: dict[str, dict[str, np.ndarray]] = {}
    for proto, test in tests.items():
        n = len(test)
        r = {k: np.zeros(n) for k in ("model", "rule_own", "own_truth", "known_group", "never_only", "p_new",
                                      "p as a ranker column")}
        gated = {t: np.zeros(n) for t in (0.5, 0.6, 0.7, 0.8)}
        soft = {beta: np.zeros(n) for beta in BETAS}
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
            p = float(np.clip(clf.predict_proba(case_rows([b])[0])[0, 1], 1e-3, 1 - 1e-3))
            r["p_new"][k] = p
            for t in gated:
                gated[t][k] = chosen in (never if p > t else top)
            for beta in soft:
                adj = score + beta * np.log(p / (1 - p)) * ~old
                soft[beta][k] = chosen in c[np.argsort(-adj, kind="stable")[:3]]
            bp = with_p(b, clf, p)
            ps = p_model.logit(bp[1][at][:, [*cols, bp[1].shape[1] - 1]])
            r["p as a ranker column"][k] = chosen in c[np.argsort(-ps, kind="stable")[:3]]
        out[proto] = r | {f"gated at {t}": g for t, g in gated.items()} | {
            f"score + {beta} logit(p) if never bought": g for beta, g in soft.items()}
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
    print(f"{'list':40s} {'new item':>9s} {'any departure':>14s}")
    for name in ("model", *(f"gated at {t}" for t in (0.5, 0.6, 0.7, 0.8)),
                 *(f"score + {beta} logit(p) if never bought" for beta in BETAS), "p as a ranker column"):
        print(f"{name:40s} {out['new item'][name].mean():9.3f} {dep[name].mean():14.3f}")
    print(f"done in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
