"""Substitutions for every item of a request in one pass: the candidate pools of all items and the customer's own
other items of their types (from the version's history), then ONE read of the customer views and every candidate's
store_product row (store, candidate), then ONE ranker call for all items' candidates.

A second round trip happens only when the live customer_repertoire row adds own items that the first read did not
cover (bought since the version's cut). Never offered: any product the request asks substitutes for (they are all
out of stock for this customer), an item already in the customer's cart, and a candidate whose store_product row
says on_hand == 0 or in_stock_prob == 0 (the model's ranking applies the same stock rule; it is checked here too so
the model_error answer obeys it). A stale store_product row still counts for this rule: an old "none left" is no
reason to offer the item (the rule: serving/answers/stock.py). The shopper's preferences apply too
(serving/answers/shopper.py): "none" answers no candidates with a `reason`, never-pairs and diet leave candidates
out, preferred brands come first."""

from __future__ import annotations

import logging

from pantry.featurestore.reader import Row, RowRead
from pantry.models import substitution_feedback
from pantry.models.substitution_features import OWN_CANDIDATES
from pantry.schemas import Substitution, SubstitutionRequest, SubstitutionResponse
from pantry.scoring import Scored, SubstitutionModel
from serving.answers.pipeline import guarded, open_decision, record
from serving.answers.shopper import (
    NO_SUBSTITUTIONS,
    brands_first,
    dietary_exclusions,
    ranking_depth,
    without_never_pairs,
)
from serving.answers.stock import out_of_stock
from serving.redis_guard import StoreUnavailable
from serving.services import Services

log = logging.getLogger("pantry.serving.answers")
ENDPOINT = "substitutions"
CUSTOMER_VIEWS = ("customer_repertoire", "customer_session")
MAX_POOL = 20  # candidates per product read from the store: the pool comes best-first, and each costs a read
# what the ranking and the stock rule need from store_product (fewer fields: less to fetch and decode)
STOCK_FEATURES = ("on_hand", "in_stock_prob", "units_28d", "units_7d")


def _pools(model: SubstitutionModel, product_ids: list[int]) -> list[list[int]]:
    try:
        return model.candidate_pools(product_ids)
    except Exception:  # a broken entry: no pool candidates, the customer's own items may still answer
        log.exception("candidate_pools failed for %s", product_ids)
        return [[] for _ in product_ids]


def _own(model: SubstitutionModel, product_ids: list[int], customer_id: int, features) -> list[list[int]]:
    try:
        return model.own_candidates(product_ids, customer_id=customer_id, features=features)
    except Exception:  # the pools still answer
        log.exception("own_candidates failed for %s", product_ids)
        return [[] for _ in product_ids]


async def _stock_rows(svc: Services, request: SubstitutionRequest, products: list[int], as_of) -> list[Row]:
    """The store_product rows of these products at the request's store; [] when the store cannot be read."""
    try:
        result = await svc.read([RowRead("store_product", (request.store_id, c), STOCK_FEATURES) for c in products],
                                as_of)
    except StoreUnavailable:
        return []
    return result.rows


def _candidates(pools: list[list[int]], owned: list[list[int]], requested: set[int]) -> list[list[int]]:
    """Per item: its first MAX_POOL pool candidates, then its OWN_CANDIDATES own items, none of them requested."""
    return [list(dict.fromkeys([*[c for c in pool if c not in requested][:MAX_POOL],
                                *[c for c in own if c not in requested][:OWN_CANDIDATES]]))
            for pool, own in zip(pools, owned, strict=True)]


async def substitute(svc: Services, request: SubstitutionRequest) -> SubstitutionResponse:
    choice = svc.models.choose("substitutions", request.customer_id)  # the customer's experiment arm, if any
    model = choice.scorer
    product_ids = list(dict.fromkeys(request.product_ids))  # a repeated product is answered once
    requested = set(product_ids)
    lists = [[] for _ in product_ids]
    pools: list[list[int]] = [[] for _ in product_ids]
    if model is not None:  # own items from the version's history: known before anything is read
        pools = _pools(model, product_ids)
        lists = _candidates(pools, _own(model, product_ids, request.customer_id, {}), requested)
    candidates = list(dict.fromkeys(c for items in lists for c in items))
    stock_reads = [RowRead("store_product", (request.store_id, c), STOCK_FEATURES) for c in candidates]
    # substitution feedback (pantry/models/substitution_feedback.py): the customer's row and one per item, in the
    # same round trip
    feedback_reads = substitution_feedback.reads(request.customer_id, product_ids)
    decision, other_rows = await open_decision(svc, ENDPOINT, request, request.customer_id, CUSTOMER_VIEWS,
                                               request.as_of, [*stock_reads, *feedback_reads])
    stock_rows = other_rows[:len(stock_reads)]
    feedback = substitution_feedback.Feedback.from_rows(other_rows[len(stock_reads):])
    if model is None or choice.unavailable:  # no model, or an unloadable treatment (the control answers)
        decision.fall_back("model_unavailable")
    if model is not None and decision.fallback != "store_unavailable" and decision.features.get(
            "customer_repertoire"):
        # the live repertoire row may add own items bought since the cut: their stock is read in a second round
        # trip, only when there are any the first read did not cover
        live = _candidates(pools, _own(model, product_ids, request.customer_id, decision.features), requested)
        read = set(candidates)
        extra = list(dict.fromkeys(c for items in live for c in items if c not in read))
        extra_rows = await _stock_rows(svc, request, extra, request.as_of) if extra else []
        if extra_rows:  # unreadable: the first read's candidates alone answer
            candidates, stock_rows, lists = [*candidates, *extra], [*stock_rows, *extra_rows], live
    stock = {c: row.values for c, row in zip(candidates, stock_rows, strict=False)}
    never = requested | {c for c, row in zip(candidates, stock_rows, strict=False) if out_of_stock(row.raw_values)}
    session = decision.features.get("customer_session") or {}
    never.update(session.get("cart_product_ids") or ())
    stock_ages = [row.age_s for row in stock_rows if row.age_s is not None]
    if stock_ages:
        decision.ages["store_product_max"] = max(stock_ages)

    # the shopper's preferences (serving/answers/shopper.py): no substitutions at all, never-pairs, diet
    prefs = decision.preferences
    if prefs.substitutions == "none":
        lists = [[] for _ in product_ids]
    lists = without_never_pairs(prefs, product_ids, lists)
    if banned := dietary_exclusions(svc, prefs):
        lists = [[c for c in items if c not in banned] for items in lists]

    lists = feedback.without_rejected(product_ids, lists)  # what this customer rejected for the item: never again

    lists = [[c for c in items if c not in never] for items in lists]
    ranked: list[list[Scored]] = [[] for _ in product_ids]
    if model is not None and any(lists):
        ranked = guarded(
            decision,
            lambda: model.rank(product_ids, lists, customer_id=request.customer_id, features=decision.features,
                               stock={c: stock.get(c) for items in lists for c in items},
                               k=ranking_depth(prefs, request.k), feedback=feedback),
            lambda: [[Scored(c, 0.0, "same kind of product") for c in items[: request.k]] for items in lists],
            "substitution ranker")
    out = [Substitution(pid, brands_first(svc, prefs, [s for s in items if s.product_id not in never], request.k))
           for pid, items in zip(product_ids, ranked, strict=True)]
    version = model.version if model is not None else "none"
    decision_id = record(svc, decision, "substitutions", version, out, surface=ENDPOINT,
                         experiment_id=choice.experiment_id, arm=choice.arm)
    return SubstitutionResponse(decision_id, version, out, decision.fallback,
                                NO_SUBSTITUTIONS if prefs.substitutions == "none" else None)
