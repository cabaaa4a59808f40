"""Does a larger substitution ranker, or more departures to learn from, lift the two served protocols?

Same protocol as experiments/substitution_novelty.py (validation cut, served candidates: the pool's first 20 + own
items, every event of the 35 days after the cut), the served ranker's 24 columns. Variants: the served LightGBM
(100 trees x 15 leaves, lr 0.1) on the 2 windows' sampled departures; 300 trees x 31 leaves lr 0.05; 4 windows
instead of 2; every departure of the 2 windows (no sample); min_child_samples 20 instead of 100.

Command: `PANTRY_DATA_DIR=.pantry nice -n 10 .venv/bin/python -W ignore -m experiments.substitution_capacity [CUT]`
(~6 min on 2 cores). Results: docs/DECISIONS.md "Can the substitution ranker tell who switches to a new item?".
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from experiments.substitution_novelty import TRUTH_DAYS, VALIDATION_CUT, blocks, fit, hit3
from pantry.models.substitution_features import FEATURE_NAMES
from pantry.settings import get_settings
from training import als
from training import substitutions as sub
from training.data import load_purchases


def main() -> None:
    cut = datetime.fromisoformat(sys.argv[1]).replace(tzinfo=UTC) if len(sys.argv) > 1 else VALIDATION_CUT
    settings = get_settings()
    params = als.AlsParams()
    purchases = load_purchases(settings, cut + timedelta(days=TRUTH_DAYS))
    started = time.perf_counter()
    windows: list[list] = []
    every: list = []
    for w in range(1, 5):
        start = cut - timedelta(days=w * sub.SWITCH_DAYS)
        end = start + timedelta(days=sub.SWITCH_DAYS)
        if w <= sub.WINDOWS:
            full = blocks(settings, purchases, start, end, params, False, None)[0]
            every += full
        windows.append(blocks(settings, purchases, start, end, params, False, sub.RANKER_EVENTS_PER_WINDOW)[0])
    served = [b for part in windows[: sub.WINDOWS] for b in part]
    cols = list(range(len(FEATURE_NAMES)))
    g = sub.RANKER_GBM
    variants = {
        "served (2 windows, 4,000 each, 100 x 15, lr 0.1)": (served, g),
        "300 trees x 31 leaves, lr 0.05": (served, replace(g, n_trees=300, num_leaves=31, learning_rate=0.05)),
        "min_child_samples 20": (served, replace(g, min_child_samples=20)),
        "4 windows of 4,000": ([b for part in windows for b in part], g),
        "every departure of the 2 windows": (every, g),
    }
    models = {}
    for name, (train, gbm) in variants.items():
        t0 = time.perf_counter()
        models[name] = fit(train, cols, gbm)
        print(f"{name}: fit {time.perf_counter() - t0:.1f} s", flush=True)
    end = cut + timedelta(days=TRUTH_DAYS)
    tests = {"new item": blocks(settings, purchases, cut, end, params, True, None)[0],
             "any departure": blocks(settings, purchases, cut, end, params, False, None)[0]}
    print(f"{'variant':55s} {'new item':>9s} {'any departure':>14s}")
    for name, model in models.items():
        h = {p: hit3(model, cols, t, 20).mean() for p, t in tests.items()}
        print(f"{name:55s} {h['new item']:9.3f} {h['any departure']:14.3f}", flush=True)
    print(f"done in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
