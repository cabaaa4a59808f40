"""The substitutions protocol (cut 2017-11-01, every switch event after it), baselines recomputed on the same events.

A switch event = a customer's first purchase after the cut, per product type, of an item of that type never bought
before, where the customer's usual item of the type (most bought, >= 2 baskets) was bought before the cut. The
model ranks the type's pool minus the usual item and what the customer already bought; hit@3 of the chosen item.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pantry.models.substitution_features import POOL, SCORED_POOL, Catalogue, features, neutral_rows, pool
from pantry.settings import Settings
from training import als
from training import substitutions as subs
from training.data import Index, to_days
from training.gbm import Boosted
from training.logistic import Logistic
from training.protocol import SUB_CUT
from training.timing import Timer

SERVED_READS = 20  # = serving/controllers/substitutions.py MAX_POOL: candidates whose stock serving reads


def evaluate_substitutions(settings: Settings, purchases: pd.DataFrame, timer: Timer) -> dict[str, Any]:
    params = als.AlsParams()
    cut = to_days(SUB_CUT)
    with timer.step("substitutions eval: train at the cut"):
        before, index, uf, cat = subs.fit_at(settings, purchases, SUB_CUT, params)
        ranker = subs.train_ranker(settings, purchases[purchases["day"] < cut], SUB_CUT, params) or subs.prior_ranker()
    after = purchases[purchases["day"] >= cut]
    ev = subs.switch_events(settings, before, after, index)
    shares = subs.private_share(before, index, cat)
    units = subs.store_units(before, index)
    hits = {"model (served ranker)": 0.0, "type popularity": 0.0, "ALS similarity + type popularity": 0.0}
    with timer.step("substitutions eval: rank switch events"):
        owns = subs.own_items_at(before, index, SUB_CUT)
        rows = [(j, cands, x) for j, cands, x in subs.event_rows(cat, ev, shares, index, uf, units, owns)
                if x is not None]
        logits = ranker.logit(np.concatenate([x for _j, _c, x in rows])) if rows else np.empty(0)
        offsets = np.cumsum([0] + [len(c) for _j, c, _x in rows])
        for (j, cands, x), lo, hi in zip(rows, offsets[:-1], offsets[1:], strict=True):
            target = ev.chosen[j]
            model_order = cands[np.argsort(-logits[lo:hi], kind="stable")]
            hits["model (served ranker)"] += float(target in model_order[:3])
            hits["type popularity"] += float(target in cands[:3])
            blend = x[:, 0] + 0.5 * (x[:, 1] / max(x[:, 1].max(), 1e-9))
            hits["ALS similarity + type popularity"] += float(target in cands[np.argsort(-blend, kind="stable")][:3])
        hits.update(served_reads_hits(cat, ev, shares, index, uf, units, ranker, owns))
    n_events = len(ev.customers)
    return {
        "cut": SUB_CUT.isoformat(),
        "events": n_events,
        "events_with_item_new_to_catalogue": int((ev.chosen < 0).sum()),
        "hit@3": {k: v / max(n_events, 1) for k, v in hits.items()},
        "ranker": subs.ranker_kind(ranker),
        "weights": ranker.params(),
    }


def served_reads_hits(cat: Catalogue, ev: subs.SwitchEvents, shares: pd.Series, index: Index, uf: np.ndarray,
                      units: dict[int, np.ndarray], ranker: Logistic | Boosted,
                      owns: dict[int, subs.OwnItems]) -> dict[str, float]:
    """hits@3 of the ranker when it sees only the SERVED_READS candidates serving reads (protocol exclusions
    applied after): the first by buyers (the pool order before the neutral ranking), or the first of
    `candidate_pools`'s order (SCORED_POOL items by the ranker on customer-neutral rows)."""
    by_buyers, neutral_first = [], []
    for j in range(len(ev.customers)):
        usual = int(ev.usual[j])
        scored = pool(cat, usual, SCORED_POOL)
        by_buyers.append(scored[:SERVED_READS])
        neutral_first.append(scored)
    sizes = [len(c) for c in neutral_first]
    neutral = ranker.logit(np.concatenate([neutral_rows(cat, int(ev.usual[j]), c)
                                           for j, c in enumerate(neutral_first) if len(c)])) if sum(sizes) else []
    lo = 0
    for j, c in enumerate(neutral_first):
        neutral_first[j] = c[np.argsort(-neutral[lo:lo + len(c)], kind="stable")][:POOL][:SERVED_READS]
        lo += len(c)
    names = {f"model, first {SERVED_READS} by buyers only": by_buyers,
             f"model, first {SERVED_READS} of the served pool only": neutral_first}
    out: dict[str, float] = {}
    for name, lists in names.items():
        blocks, cands_of = [], []
        for j, c in enumerate(lists):
            c = c[~np.isin(c, ev.bought[j])]
            cands_of.append(c)
            if len(c):
                u = index.user_idx(np.array([ev.customers[j]]))[0]
                su = units.get(int(ev.store_id[j]))
                blocks.append(features(cat, int(ev.usual[j]), c, float(shares.get(int(ev.customers[j]), 0.2)),
                                       uf[u] if u >= 0 else None,
                                       su[c] if su is not None else np.zeros(len(c), dtype=np.float32),
                                       owns.get(int(ev.customers[j]), subs.NO_OWN_ITEMS)))
        logits = ranker.logit(np.concatenate(blocks)) if blocks else np.empty(0)
        hits, lo = 0.0, 0
        for j, c in enumerate(cands_of):
            top = c[np.argsort(-logits[lo:lo + len(c)], kind="stable")][:3]
            hits += float(ev.chosen[j] in top)
            lo += len(c)
        out[name] = hits
    return out
