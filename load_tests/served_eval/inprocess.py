"""The same cases through the same model versions in-process, as docs/MODEL_REPORT.md's evaluation calls them.

The versions are the ones the cut's service serves (its registry's ACTIVE versions), loaded with `load_version` and
called through the scorer protocol without online features (no live repertoire, no cart, no customer embedding row)
and without stock (every candidate's store_product row unknown). The substitution candidates are those serving
ranks: `candidate_pools` minus the asked item, its first MAX_POOL, and the customer's own other items of the type
(`own_candidates`, from the version's history; serving adds what the live repertoire row holds since the cut). A
served answer that differs from these differs only through what serving adds: the online rows, the stock reads and
rule, the store filter, the campaigns approved and active at `as_of`.
"""

from __future__ import annotations

from datetime import datetime

from tqdm import tqdm

from pantry import dataset
from pantry.models import load_version, registry
from pantry.scoring import MODEL_NAMES
from pantry.settings import Settings
from serving.answers.substitutions import MAX_POOL
from training.served_cases import NBA_K, REC_K, SUB_K, NbaCases, RecCases, SubCases, day_time


def active_models(settings: Settings) -> dict[str, object]:
    out = {}
    for name in MODEL_NAMES:
        version = registry.active_version(settings.models_dir, name)
        if version is None:
            raise RuntimeError(f"no ACTIVE {name} under {settings.models_dir}")
        out[name] = load_version(settings.models_dir, name, version)
    return out


def substitution_lists(model, cases: SubCases, exclude_bought: bool = False, k: int = SUB_K) -> list[list[int]]:
    """Per case: the ranker's top k of the first MAX_POOL of the served pool and the customer's own items
    (without the customer's products of the type bought before the cut when `exclude_bought`, as the report's
    protocol does)."""
    out = []
    for c, usual, bought in zip(cases.customer_id.tolist(), cases.usual.tolist(), cases.bought, strict=True):
        pool = [p for p in model.candidate_pools([usual])[0] if p != usual][:MAX_POOL]
        own = model.own_candidates([usual], customer_id=c, features={})[0]  # the version's history, as served
        pool = list(dict.fromkeys([*pool, *(p for p in own if p != usual)]))
        if exclude_bought:
            pool = [p for p in pool if p not in bought]
        ranked = model.rank([usual], [pool], customer_id=c, features={}, stock={}, k=k)[0]
        out.append([s.product_id for s in ranked])
    return out


def recommendation_lists(model, cases: RecCases) -> list[list[int]]:
    return [[s.product_id for s in model.recommend({}, customer_id=int(c), k=REC_K, surface="for_you",
                                                   exclude=frozenset(), store_id=None)]
            for c in tqdm(cases.customer_id, desc="recommendations in-process", unit="customer", leave=False)]


def campaign_windows(settings: Settings) -> list[tuple[int, datetime, datetime]]:
    """(campaign id, start, end) of the data set's campaigns, as serving reads them (serving/campaigns.py)."""
    desc = dataset.read_table(settings, "campaign_descriptions")
    return [(int(r.campaign_id), r.start_date.to_pydatetime(), r.end_date.to_pydatetime()) for r in desc.itertuples()]


def nba_lists(model, cases: NbaCases, windows: list[tuple[int, datetime, datetime]] | None = None) -> list[list[int]]:
    """Every campaign is a candidate (the model keeps those the customer is enrolled in and active that day, through
    the day after the end), as training/evaluate_nba.py. With `windows`, only the campaigns with start <= as_of <= end:
    serving's rule (`Campaign.active_at`) for the campaigns it passes, all approved in the demo."""
    every = frozenset(int(c) for c in model.t.campaigns)
    out = []
    for c, d in zip(cases.customer_id.tolist(), cases.day.tolist(), strict=True):
        now: datetime = day_time(d)
        ids = every if windows is None else frozenset(i for i, start, end in windows if start <= now <= end)
        actions = model.actions({}, customer_id=c, campaign_ids=ids, k=NBA_K, channel="app", now=now)
        out.append([a.coupon_upc if a.action_type == "coupon" and a.coupon_upc is not None else -1 for a in actions])
    return out
