"""The cases of the served-path evaluation at one cut, and the simple rules' answers on the same cases.

A served answer is judged on what happened after the cut; the service asked (load_tests/served_eval/) was built from
the events before it. Cases, per task:

- substitutions, two protocols (training/substitutions.py `switch_events`): `new item` = a customer's first purchase
  after the cut, per product type, of an item of that type never bought before; `any departure` = the first purchase
  of the type other than the usual item, bought before or not. The usual item is the most bought of the type
  (>= 2 baskets before the cut); the service is asked for substitutes of it at the store of that purchase, as of
  its time. A random sample of `n` events per protocol.
- recommendations: customers with purchases before the cut and in the REC_WINDOW_DAYS after it (a sample of `n`);
  truth = the products each bought in that window; asked as of the cut, at the customer's most used store.
- next best action: every coupon redemption after the cut, asked as of the redemption's date (the data has dates).

The rules see the same purchases before the cut as the models and nothing after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from pantry import dataset
from training import nba
from training import substitutions as subs
from training.data import DAY_S, HALF_LIFE_DAYS, Index, to_days
from training.evaluate_nba import RULE_NAMES, rule_orders
from training.metrics import precision_recall_ndcg

REC_WINDOW_DAYS = 35  # the report's recommendations holdout (2017-11-26 14:56 to the end of the data) is ~35 days
REC_K = 10
SUB_K = 3
NBA_K = 3
SUB_PROTOCOLS = {"new item": True, "any departure": False}  # name -> switch_events(new_only=...)
NEVER_BOUGHT_POPULAR = "most popular never-bought item of the type"
OWN_THEN_POPULAR = "own other items of the type (most bought first), then type popularity"
TYPE_POPULAR = "most popular item of the type"
DECAYED = "decayed repeat count (90 d half-life)"
POPULAR = "popularity"


def day_time(day: float) -> datetime:
    return datetime.fromtimestamp(round(day * DAY_S, 3), UTC)


@dataclass
class SubCases:
    protocol: str
    events: int  # events of the protocol after the cut, before sampling
    customer_id: np.ndarray
    store_id: np.ndarray
    day: np.ndarray  # when the purchase happened (float days since the epoch)
    usual: np.ndarray  # product ids
    chosen: np.ndarray
    bought: list[frozenset[int]]  # the customer's products of the type bought before the cut (the usual one too)
    rules: dict[str, list[list[int]]] = field(default_factory=dict)  # rule -> top SUB_K product ids per case


@dataclass
class RecCases:
    customers: int  # customers with purchases on both sides, before sampling
    customer_id: np.ndarray
    store_id: np.ndarray  # the customer's most used store before the cut
    truth: list[frozenset[int]]
    rules: dict[str, list[list[int]]] = field(default_factory=dict)


@dataclass
class NbaCases:
    customer_id: np.ndarray
    coupon_upc: np.ndarray  # the redeemed coupon
    day: np.ndarray  # the redemption's date (float days since the epoch, midnight UTC)
    candidates: np.ndarray  # coupons of the customer's campaigns active that day (0: none)
    rules: dict[str, list[list[int]]] = field(default_factory=dict)  # rule -> top NBA_K coupon_upc per case


def _sample(n_total: int, n: int | None, rng: np.random.Generator) -> np.ndarray:
    if n is None or n >= n_total:
        return np.arange(n_total)
    return np.sort(rng.choice(n_total, size=n, replace=False))


def _type_lists(settings, before: pd.DataFrame) -> tuple[dict[int, str], dict[str, list[int]]]:
    """product -> type, and type -> its products bought before the cut, most buyers first (ties by id)."""
    products = dataset.read_table(settings, "products")[["product_id", "product_type"]].dropna()
    buyers = before.groupby("product_id")["customer_id"].nunique().rename("buyers").reset_index()
    ranked = buyers.merge(products, on="product_id").sort_values(["product_type", "buyers", "product_id"],
                                                                 ascending=[True, False, True])
    type_of = dict(zip(products["product_id"].astype(int), products["product_type"], strict=True))
    return type_of, {str(t): g.astype(int).tolist() for t, g in ranked.groupby("product_type")["product_id"]}


def substitution_rules(usual: int, bought: frozenset[int], own_counts: dict[int, int],
                       type_list: list[int], k: int = SUB_K) -> dict[str, list[int]]:
    """The rules' top k for one case. `own_counts`: baskets before the cut per product the customer bought of the
    type; `type_list`: the type's products by buyers before the cut."""
    rank = {p: r for r, p in enumerate(type_list)}
    own = sorted((p for p in bought if p != usual), key=lambda p: (-own_counts.get(p, 0), rank.get(p, 1 << 30), p))
    taken = {usual, *own}
    return {
        NEVER_BOUGHT_POPULAR: [p for p in type_list if p != usual and p not in bought][:k],
        OWN_THEN_POPULAR: (own + [p for p in type_list if p not in taken])[:k],
        TYPE_POPULAR: [p for p in type_list if p != usual][:k],
    }


def substitution_cases(settings, purchases: pd.DataFrame, cut: datetime, n: int | None,
                       seed: int = 0) -> dict[str, SubCases]:
    before = purchases[purchases["day"] < to_days(cut)]
    after = purchases[purchases["day"] >= to_days(cut)]
    index = Index.from_purchases(purchases)  # every item: one first sold after the cut keeps its id
    type_of, type_lists = _type_lists(settings, before)
    counts = before.groupby(["customer_id", "product_id"])["basket_id"].nunique()
    rng = np.random.default_rng(seed)
    out: dict[str, SubCases] = {}
    for protocol, new_only in SUB_PROTOCOLS.items():
        ev = subs.switch_events(settings, before, after, index, new_only=new_only)
        pick = _sample(len(ev.customers), n, rng)
        cases = SubCases(protocol, len(ev.customers), ev.customers[pick], ev.store_id[pick], ev.day[pick],
                         index.products[ev.usual[pick]], index.products[ev.chosen[pick]],
                         [frozenset(index.products[ev.bought[j]].tolist()) for j in pick])
        names = (NEVER_BOUGHT_POPULAR, OWN_THEN_POPULAR, TYPE_POPULAR)
        cases.rules = {name: [] for name in names}
        for c, usual, bought in zip(cases.customer_id.tolist(), cases.usual.tolist(), cases.bought, strict=True):
            own = {p: int(counts.get((c, p), 0)) for p in bought}
            lists = substitution_rules(usual, bought, own, type_lists.get(str(type_of.get(usual)), []))
            for name in names:
                cases.rules[name].append(lists[name])
        out[protocol] = cases
    return out


def decayed_top(before: pd.DataFrame, customers: np.ndarray, cut: datetime, k: int = REC_K) -> dict[int, list[int]]:
    """Per customer: the k products with the most baskets, each weighted 0.5^(days before the cut / 90)."""
    mine = before[before["customer_id"].isin(customers)]
    per_basket = mine.groupby(["customer_id", "product_id", "basket_id"], sort=False)["day"].min().reset_index()
    per_basket["w"] = np.power(0.5, (to_days(cut) - per_basket["day"].to_numpy()) / HALF_LIFE_DAYS)
    dec = per_basket.groupby(["customer_id", "product_id"])["w"].sum().reset_index()
    dec = dec.sort_values(["customer_id", "w", "product_id"], ascending=[True, False, True])
    top = dec.groupby("customer_id").head(k)
    return {int(c): g.astype(int).tolist() for c, g in top.groupby("customer_id")["product_id"]}


def recommendation_cases(purchases: pd.DataFrame, cut: datetime, n: int | None, seed: int = 0,
                         window_days: int = REC_WINDOW_DAYS) -> RecCases:
    ref = to_days(cut)
    before = purchases[purchases["day"] < ref]
    window = purchases[(purchases["day"] >= ref) & (purchases["day"] < to_days(cut + timedelta(days=window_days)))]
    both = np.intersect1d(before["customer_id"].unique(), window["customer_id"].unique())
    customers = both[_sample(len(both), n, np.random.default_rng(seed))]
    truth = window.groupby("customer_id")["product_id"].agg(lambda s: frozenset(s.astype(int).tolist()))
    stores = before[before["store_id"] >= 0].groupby("customer_id")["store_id"].agg(lambda s: int(s.mode().min()))
    cases = RecCases(len(both), customers, stores.reindex(customers).fillna(-1).to_numpy(np.int64),
                     [truth[c] for c in customers])
    popular = before.groupby("product_id")["basket_id"].nunique().sort_values(ascending=False, kind="stable")
    top_popular = popular.index[:REC_K].astype(int).tolist()
    decayed = decayed_top(before, customers, cut)
    cases.rules = {DECAYED: [decayed.get(int(c), []) for c in customers], POPULAR: [top_popular] * len(customers)}
    return cases


def nba_cases(settings, purchases: pd.DataFrame, cut: datetime, seed: int = 0) -> NbaCases:
    """Every redemption after the cut, with the rules' top NBA_K over the coupons of the customer's campaigns active
    that day (point-in-time tables at the cut, as training/evaluate_nba.py)."""
    t = nba.build_tables(settings, purchases, cut)
    events = nba.redemption_events(settings, cut, None)
    rng = np.random.default_rng(seed)
    sizes: list[int] = []
    rules: dict[str, list[list[int]]] = {name: [] for name in RULE_NAMES}
    for _row, cpn, _camp, x, _target in nba.event_sets(t, events):
        sizes.append(len(cpn))
        orders = rule_orders(x, rng) if x is not None else {}
        for name in RULE_NAMES:
            rules[name].append(t.coupons[cpn[orders[name][:NBA_K]]].tolist() if name in orders else [])
    return NbaCases(events["customer_id"].to_numpy(np.int64), events["coupon_upc"].to_numpy(np.int64),
                    events["day"].to_numpy(np.float64), np.asarray(sizes, dtype=np.int64), rules)


def hits(lists: list[list[int]], truth: np.ndarray | list[int], k: int) -> np.ndarray:
    """1.0 where the truth is in the first k of the list."""
    return np.array([float(int(t) in ranked[:k]) for ranked, t in zip(lists, truth, strict=True)])


def precisions(lists: list[list[int]], truth: list[frozenset[int]], k: int = REC_K) -> np.ndarray:
    """Per case: the share of the first k that the customer bought (a short list still divides by k)."""
    return np.array([precision_recall_ndcg(ranked, set(t), k)[0] for ranked, t in zip(lists, truth, strict=True)])


def truth_group_lists(deep: list[list[int]], bought: list[frozenset[int]], chosen: np.ndarray | list[int],
                      k: int = SUB_K) -> list[list[int]]:
    """Per case, the first k of a deep served list taken from the chosen item's group only: the items the customer
    bought before when the chosen item is one of them, the never-bought ones otherwise. A ceiling, not a method (it
    reads the truth): what a perfect call of "back to their own items or on to a new one" reaches with the served
    order."""
    return [[p for p in ranked if (p in b) == (int(c) in b)][:k]
            for ranked, b, c in zip(deep, bought, chosen, strict=True)]


def by_truth_group(lists: dict[str, list[list[int]]], bought: list[frozenset[int]], chosen: np.ndarray | list[int],
                   k: int = SUB_K) -> dict[str, float]:
    """The share of cases whose chosen item was bought before, and each list's hit@k on those and on the others
    (only the groups that have cases)."""
    old = np.array([int(c) in b for c, b in zip(chosen, bought, strict=True)], dtype=bool)
    out = {"chosen item bought before (share of cases)": float(old.mean()) if len(old) else 0.0}
    for name, ranked in lists.items():
        h = hits(ranked, chosen, k)
        for part, where in (("bought before", old), ("never bought", ~old)):
            if where.any():
                out[f"{name}: hit@{k} where the chosen item was {part}"] = float(h[where].mean())
    return out
