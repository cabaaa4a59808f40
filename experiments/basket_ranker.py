"""Which learner orders the complete_basket candidates, on how many baskets? (LightGBM binary, 80 trees, 4,000)

Command: `PANTRY_DATA_DIR=... .venv/bin/python -m experiments.basket_ranker`: a validation cut four weeks before the
test cut (2017-10-29 14:56:44); each learner is trained as `training/basket.py` trains the served one (table and
repertoires as of 28 days before the validation cut, baskets of the 28 days up to it, half as the cart) and scores
5,000 baskets from the validation cut to the test cut (half as the cart, seeded), precision@10 of the rest. The test
holdout is never read.

Result (2026-12-04 02:48 UTC, 2 min 13 s on the shared 2-core machine while tests ran beside it, so fit times are
rough; 4,799 of the 5,000 baskets had a cart product in the table), precision@10:
- one feature alone: confidence_sum 0.0497, repertoire_share 0.0688;
- 2,000 baskets: logistic 0.0757, binary 80 trees 0.0794, binary 40 trees 0.0789 (fit 1.8 s), lambdarank 0.0796;
- 4,000 baskets: logistic 0.0757, binary 80 trees 0.0796 (3.4 s), binary 40 trees 0.0793 (1.9 s), lambdarank
  80 trees 0.0801 (6.5 s);
- 8,000 baskets: logistic 0.0760, binary 80 trees 0.0802 (9.0 s), binary 40 trees 0.0792, lambdarank 0.0808 (31 s).
Served: binary, 40 trees, 4,000 baskets. The trees beat the logistic blend of the same features by ~5%; more trees,
more baskets or lambdarank add under 2% for 2-16x the fit time.
"""

from __future__ import annotations

import time
from datetime import timedelta

import numpy as np
from scipy.optimize import minimize

from pantry.models.basket import FEATURE_NAMES, candidate_features, context_rows
from pantry.settings import get_settings
from training import basket
from training.data import load_purchases, to_days
from training.gbm import GbmParams, fit_lambdarank
from training.protocol import REC_CUT

VALIDATION_CUT = REC_CUT - timedelta(days=28)


def linear(x: np.ndarray, y: np.ndarray):
    """A plain logistic regression on standardized features (L-BFGS): the 'logistic blend' alternative."""
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-9
    z = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])

    def loss(w):
        s = z @ w
        p = 1.0 / (1.0 + np.exp(-s))
        return (np.logaddexp(0, s) - y * s).mean() + 1e-4 * (w @ w), z.T @ (p - y) / len(y) + 2e-4 * w

    w = minimize(loss, np.zeros(z.shape[1]), jac=True, method="L-BFGS-B").x
    return lambda f: ((f - mean) / scale) @ w[:-1]


def main() -> None:
    purchases = load_purchases(get_settings(), REC_CUT, archive=False)
    day = purchases["day"].to_numpy()
    inner = VALIDATION_CUT - timedelta(days=basket.RANKER_DAYS)
    before_inner = purchases[day < to_days(inner)]
    window = purchases[(day >= to_days(inner)) & (day < to_days(VALIDATION_CUT))]
    table_inner, reps_inner = basket.copurchase(before_inner), basket.repertoires(before_inner, inner)
    before_val = purchases[day < to_days(VALIDATION_CUT)]
    table, reps = basket.copurchase(before_val), basket.repertoires(before_val, VALIDATION_CUT)
    held = basket.splits(purchases[day >= to_days(VALIDATION_CUT)], np.random.default_rng(7), 5000)
    empty = (np.empty(0, dtype=np.int64), np.empty(0))
    cases = []
    for s in held:
        context = context_rows(table, s.cart, [])
        if len(context):
            c = candidate_features(table, context, *reps.get(s.customer_id, empty))
            cases.append((table.products[c.rows], c.features, s.rest))

    def precision(score) -> float:
        hits = [len(set(p[np.argsort(-score(f), kind="stable")[:10]].tolist()) & rest) for p, f, rest in cases]
        return float(np.sum(hits)) / (10 * len(held))

    print(f"validation cut {VALIDATION_CUT.date()}, {len(held)} baskets ({len(cases)} with a known cart product)")
    print(f"  confidence_sum alone: {precision(lambda f: f[:, 2]):.4f}")
    print(f"  repertoire_share alone: {precision(lambda f: f[:, 8]):.4f}")
    for n_baskets in (2000, 4000, 8000):
        x, y, sizes = basket.training_set(table_inner, reps_inner,
                                          basket.splits(window, np.random.default_rng(0), n_baskets))
        t0 = time.perf_counter()
        model = linear(x, y)
        print(f"  {n_baskets} baskets, logistic: {precision(model):.4f} (fit {time.perf_counter() - t0:.1f} s)")
        for params in (GbmParams(objective="binary", n_trees=80), GbmParams(objective="binary", n_trees=40),
                       GbmParams(objective="lambdarank", n_trees=80)):
            t0 = time.perf_counter()
            booster = fit_lambdarank(x, y, sizes, FEATURE_NAMES, params)._booster()
            fit_s = time.perf_counter() - t0
            got = precision(lambda f, b=booster: b.predict(f, raw_score=True, num_threads=1))
            print(f"  {n_baskets} baskets, {params.objective} {params.n_trees} trees: {got:.4f} (fit {fit_s:.1f} s)")


if __name__ == "__main__":
    main()
