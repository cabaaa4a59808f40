"""One cut of the served-path evaluation: build and serve (service.py), ask every case over HTTP (client.py), the
same cases in-process (inprocess.py) and the rules (training/served_cases.py), each metric with its 95% interval
and every method's paired difference to the served answer on the same cases."""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from load_tests.served_eval import client, inprocess
from load_tests.served_eval.service import demo_at
from pantry.settings import Settings
from training import served_cases as sc
from training.data import default_until, load_purchases, parse_until
from training.metrics import interval, paired_difference

SERVED = "served (HTTP)"
SERVED_NO_STORE = "served (HTTP), no store_id"
SERVED_STORE = "served (HTTP), store_id = the customer's most used store"
SERVED_NOT_BOUGHT = "served list without the items bought before (diagnostic)"
SERVED_TRUTH_GROUP = "served list, the chosen item's group only (ceiling: reads the truth)"
IN_PROCESS = "in-process, same version (no online rows, no stock, no store filter)"
IN_PROCESS_PROTOCOL = "in-process, bought items excluded (the report's protocol)"
NBA_SAME_WINDOWED = "served == in-process given serving's campaign window (start <= as_of <= end)"


def _summarise(values: dict[str, np.ndarray], binary: bool, served: str = SERVED) -> dict[str, Any]:
    """Each method's value and interval; `served` (the client's answer) minus each other method, paired."""
    return {"served": served, "methods": {name: interval(v, binary) for name, v in values.items()},
            "vs_served": {name: paired_difference(values[served], v) for name, v in values.items() if name != served}}


def _answers_info(answers: list[client.Answer]) -> dict[str, Any]:
    fallbacks: dict[str, int] = {}
    for a in answers:
        if a.fallback:
            fallbacks[a.fallback] = fallbacks.get(a.fallback, 0) + 1
    return {"requests": len(answers), "fallbacks": fallbacks, "retried": sum(a.retries > 0 for a in answers),
            "model_versions": sorted({a.model_version for a in answers})}


def substitutions(served, model, cases: sc.SubCases) -> dict[str, Any]:
    answers = client.ask_all(served, client.substitution_requests(cases), f"substitutions ({cases.protocol})")
    deep = [a.items for a in answers]  # every candidate left after the stock rule, best first (<= MAX_POOL)
    pool = inprocess.substitution_lists(model, cases, k=client.SUB_ASK_K)  # the same candidates before it
    not_bought = [[p for p in d if p not in b] for d, b in zip(deep, cases.bought, strict=True)]
    lists = {SERVED: [d[: sc.SUB_K] for d in deep], SERVED_NOT_BOUGHT: not_bought,
             SERVED_TRUTH_GROUP: sc.truth_group_lists(deep, cases.bought, cases.chosen), IN_PROCESS: pool,
             IN_PROCESS_PROTOCOL: inprocess.substitution_lists(model, cases, exclude_bought=True), **cases.rules}
    values = {name: sc.hits(v, cases.chosen, sc.SUB_K) for name, v in lists.items()}
    chosen = cases.chosen.tolist()
    in_pool = np.array([c in p for c, p in zip(chosen, pool, strict=True)])
    kept = np.array([c in d for c, d in zip(chosen, deep, strict=True)])
    return {
        "events": cases.events, "cases": len(chosen), **_summarise(values, binary=True),
        "diagnostics": {
            "chosen item among the served pool's first 20": float(in_pool.mean()),
            "... and taken out by the stock rule": float((in_pool & ~kept).mean()),
            "served top 3 with an item bought before": float(np.mean([bool(set(d[: sc.SUB_K]) & b) for d, b in
                                                                     zip(deep, cases.bought, strict=True)])),
            "candidates left after the stock rule (mean)": float(np.mean([len(d) for d in deep])),
            "candidates in the served pool's first 20 (mean)": float(np.mean([len(p) for p in pool])),
            # where the served list wins or loses against the own-items rule: the cases that went back to an item
            # bought before, and the others
            **sc.by_truth_group({"served": lists[SERVED], "own-items rule": lists[sc.OWN_THEN_POPULAR]},
                                cases.bought, cases.chosen),
        },
        "answers": _answers_info(answers),
    }


def recommendations(served, model, cases: sc.RecCases, cut) -> dict[str, Any]:
    with_store = client.ask_all(served, client.recommendation_requests(cases, cut, True), "recommendations")
    no_store = client.ask_all(served, client.recommendation_requests(cases, cut, False), "recommendations, no store")
    lists = {SERVED_STORE: [a.items for a in with_store], SERVED_NO_STORE: [a.items for a in no_store],
             IN_PROCESS: inprocess.recommendation_lists(model, cases), **cases.rules}
    values = {name: sc.precisions(v, cases.truth) for name, v in lists.items()}
    same = np.mean([a.items == b for a, b in zip(no_store, lists[IN_PROCESS], strict=True)])
    no_store_diffs = _summarise(values, binary=False, served=SERVED_NO_STORE)["vs_served"]
    return {"customers": cases.customers, "cases": len(cases.truth), "window_days": sc.REC_WINDOW_DAYS,
            **_summarise(values, binary=False, served=SERVED_STORE), "vs_served_no_store": no_store_diffs,
            "diagnostics": {"served without store_id == in-process (share of customers)": float(same)},
            "answers": _answers_info([*with_store, *no_store])}


def next_best_action(served, model, cases: sc.NbaCases) -> dict[str, Any]:
    answers = client.ask_all(served, client.nba_requests(cases), "next-best-action")
    lists = {SERVED: [a.items for a in answers], IN_PROCESS: inprocess.nba_lists(model, cases), **cases.rules}
    values = {name: sc.hits(v, cases.coupon_upc, sc.NBA_K) for name, v in lists.items()}
    same = np.mean([a.items == b for a, b in zip(answers, lists[IN_PROCESS], strict=True)])
    windowed = inprocess.nba_lists(model, cases, inprocess.campaign_windows(served.settings))
    same_windowed = np.mean([a.items == b for a, b in zip(answers, windowed, strict=True)])
    return {"events": len(cases.coupon_upc), "with_candidates": int((cases.candidates > 0).sum()),
            "median_candidates": float(np.median(cases.candidates[cases.candidates > 0]))
            if (cases.candidates > 0).any() else 0.0,
            **_summarise(values, binary=True),
            "diagnostics": {"served == in-process (share of redemptions)": float(same),
                            NBA_SAME_WINDOWED: float(same_windowed)},
            "answers": _answers_info(answers)}


class _Clock:
    def __init__(self) -> None:
        self.steps: dict[str, float] = {}

    @contextmanager
    def step(self, name: str):
        start = time.perf_counter()
        yield
        self.steps[name] = round(time.perf_counter() - start, 1)


def evaluate_cut(settings: Settings, root: Path, cut_text: str, n_cases: int | None, seed: int = 0) -> dict[str, Any]:
    """Serve the cut (built under root/CUT if not yet), ask every case, stop the service; the figures of the cut."""
    cut = parse_until(cut_text)
    clock = _Clock()
    with demo_at(settings, root, cut_text) as served:
        clock.steps["pantry demo --until: build (steps not done yet) + serve, to /readyz"] = round(served.ready_s, 1)
        mine = served.settings
        with clock.step("cases + rules"):
            purchases = load_purchases(mine, default_until(mine))
            sub_cases = sc.substitution_cases(mine, purchases, cut, n_cases, seed)
            rec_cases = sc.recommendation_cases(purchases, cut, n_cases, seed)
            nba_cases = sc.nba_cases(mine, purchases, cut, seed)
            del purchases
        with clock.step("load the served versions in-process"):
            models = inprocess.active_models(mine)
        out: dict[str, Any] = {"cut": cut.isoformat(), "versions": {n: m.version for n, m in models.items()}}
        with clock.step("substitutions: HTTP + in-process"):
            out["substitutions"] = {protocol: substitutions(served, models["substitutions"], cases)
                                    for protocol, cases in sub_cases.items()}
        with clock.step("recommendations: HTTP + in-process"):
            out["recommendations"] = recommendations(served, models["recommender"], rec_cases, cut)
        with clock.step("next best action: HTTP + in-process"):
            out["next_best_action"] = next_best_action(served, models["next_best_action"], nba_cases)
        stopping = time.perf_counter()
    clock.steps["stop the service"] = round(time.perf_counter() - stopping, 1)
    out["timings_s"] = clock.steps
    served_versions = {v for task in ("recommendations", "next_best_action") for v in
                       out[task]["answers"]["model_versions"]}
    served_versions |= {v for r in out["substitutions"].values() for v in r["answers"]["model_versions"]}
    out["served_versions_match"] = served_versions <= set(out["versions"].values())
    return out
