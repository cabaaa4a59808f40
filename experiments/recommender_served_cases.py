"""The recommender on the served-path evaluation's cases, in-process, with and without the customer's store.

Per cut: train only the recommender at the cut (training/recommender.py `fit`, into a temporary directory: no
registry is touched), load it as serving does (pantry.models.recommender.Recommender), and score the cases of
training/served_cases.py `recommendation_cases` (same sampling, same seed as `pantry evaluate-served`) with
store_id=None and store_id=the customer's most used store, next to the decayed-repeat-count rule on the same cases.
Store-filter variants are applied to the loaded model by replacing its store tables (`--store-windows`).

Choices are made at a validation cut whose 35-day truth ends before the first evaluation cut (2017-07-25), then
confirmed at the evaluation cuts:

    .venv/bin/python -m experiments.recommender_served_cases --cuts 2017-06-20,2017-07-25 \
        --store-windows 28,56,91,182,all --rerankers all:2,1500:1:100:15:0.1:binary
    .venv/bin/python -m experiments.recommender_served_cases --cuts 2017-09-01,2017-10-01,2017-11-01,2017-11-26 \
        --store-windows 28 --rerankers all:2,1500:1:100:15:0.1:binary

`--rerankers`: users (or all) : label windows [: trees : leaves : learning rate [: objective]]; "store (as trained)"
is the version's own filter (ASSORTMENT_DAYS), "store, window N" the filter rebuilt on N days of sales.
Result (docs/DECISIONS.md): the 365-day filter took the store mode from 0.95-0.97x the rule to 1.03-1.04x at the
evaluation cuts; lambdarank on every customer of two windows gained +0.002-0.003 at validation; nothing tried
reached 1.05x the rule at every cut.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from pantry.models.recommender import Recommender
from pantry.models.registry import Manifest
from pantry.settings import from_env
from training import recommender
from training import served_cases as sc
from training.als import AlsParams
from training.data import default_until, load_purchases, parse_until, to_days
from training.timing import Timer


def lists(model: Recommender, cases: sc.RecCases, with_store: bool) -> list[list[int]]:
    out = []
    for c, s in zip(cases.customer_id.tolist(), cases.store_id.tolist(), strict=True):
        store = int(s) if with_store and s >= 0 else None  # as load_tests/served_eval/client.py asks
        out.append([x.product_id for x in model.recommend({}, customer_id=c, k=sc.REC_K, surface="for_you",
                                                          exclude=frozenset(), store_id=store)])
    return out


def rule_at_store(model: Recommender, cases: sc.RecCases, long_rule: dict[int, list[int]]) -> list[list[int]]:
    out = []
    for c, s in zip(cases.customer_id.tolist(), cases.store_id.tolist(), strict=True):
        mask = model._store_mask(int(s)) if s >= 0 else None
        ranked = long_rule.get(c, [])
        if mask is not None:
            idx = np.clip(np.searchsorted(model.products, ranked), 0, len(model.products) - 1)
            ranked = [p for p, i in zip(ranked, idx.tolist(), strict=True) if model.products[i] == p and mask[i]]
        out.append(ranked[: sc.REC_K])
    return out


def set_store_filter(model: Recommender, tables) -> None:
    model.assortment = tables[:3]
    model._store_masks.clear()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cuts", default="2017-07-25")
    ap.add_argument("--cases", type=int, default=2000)
    ap.add_argument("--store-windows", default="", help="extra store-filter variants, e.g. 91,all (days)")
    ap.add_argument("--rerankers", default="all:2",
                    help="re-ranker training sets, users|all:windows[:trees:leaves:lr[:objective]],... (one fit each)")
    args = ap.parse_args()
    settings = from_env()
    default_gbm = recommender.RERANKER_GBM
    purchases = load_purchases(settings, default_until(settings))
    for cut_text in args.cuts.split(","):
        cut = parse_until(cut_text)
        cases = sc.recommendation_cases(purchases, cut, args.cases, 0)
        rule = sc.precisions(cases.rules[sc.DECAYED], cases.truth)
        before = purchases[purchases["day"] < to_days(cut)]
        long_rule = sc.decayed_top(before, cases.customer_id, cut, k=1000)
        rows: dict[str, list[list[int]]] = {}
        for config in args.rerankers.split(","):
            users, windows, *gbm = config.split(":")  # users:windows[:trees:leaves:learning rate]
            recommender.RERANKER_USERS = None if users == "all" else int(users)
            recommender.RERANKER_WINDOWS = int(windows)
            recommender.RERANKER_GBM = default_gbm
            if gbm:
                recommender.RERANKER_GBM = replace(default_gbm, n_trees=int(gbm[0]), num_leaves=int(gbm[1]),
                                                   learning_rate=float(gbm[2]),
                                                   objective=gbm[3] if len(gbm) > 3 else default_gbm.objective)
            t0 = time.perf_counter()
            fitted = recommender.fit(before, cut, AlsParams(), Timer(echo=lambda *_: None))
            print(f"  fit {config}: {time.perf_counter() - t0:.0f} s", flush=True)
            with tempfile.TemporaryDirectory() as tmp:
                recommender.save(fitted, Path(tmp))
                manifest = Manifest(name="recommender", version="experiment", trained_until=cut.isoformat(),
                                    data_digest="", feature_service="", created_at="", files={})
                model = Recommender(Path(tmp), manifest)
                rows[f"{config} no store"] = lists(model, cases, False)
                rows[f"{config} store (as trained)"] = lists(model, cases, True)
                if config == args.rerankers.split(",")[0]:
                    # the rule under the same store filter: what the filter costs a ranking that is not the model's
                    rows["rule, store filter (as trained)"] = rule_at_store(model, cases, long_rule)
                for w in [x for x in args.store_windows.split(",") if x]:
                    days = None if w == "all" else float(w)
                    set_store_filter(model, recommender.store_tables(before, fitted.index, cut, days))
                    rows[f"{config} store, window {w}"] = lists(model, cases, True)
        print(f"cut {cut_text}: {len(cases.truth)} cases; rule {rule.mean():.4f}", flush=True)
        for name, got in rows.items():
            p = sc.precisions(got, cases.truth)
            diff = p - rule
            se = diff.std(ddof=1) / np.sqrt(len(diff))
            print(f"  {name:36s} {p.mean():.4f}  ratio {p.mean() / rule.mean():.3f}  "
                  f"minus rule {diff.mean():+.4f} (+-{1.96 * se:.4f})", flush=True)


if __name__ == "__main__":
    main()
