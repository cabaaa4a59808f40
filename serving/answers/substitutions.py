"""Substitutions: candidate pools, then ONE read of the customer views and the store_product rows (store,
candidate), then the model's ranking.

Never offered: any product the request asks substitutes for (they are all out of stock for this customer), an item
already in the customer's cart, and a candidate whose store_product row says on_hand == 0 or in_stock_prob == 0
(the model's ranking applies the same stock rule; it is checked here too so the model_error answer obeys it).
A stale store_product row still counts for this rule: an old "none left" is no reason to offer the item."""

from __future__ import annotations

import logging
from typing import Any

from pantry.featurestore.reader import Row, RowRead
from pantry.models.substitutions import OWN_CANDIDATES
from pantry.scoring import Scored, SubstitutionModel
from serving.answers.pipeline import guarded, open_decision, record
from serving.redis_guard import StoreUnavailable
from serving.schemas import Substitution, SubstitutionRequest, SubstitutionResponse
from serving.services import Services

log = logging.getLogger("pantry.serving.answers")
ENDPOINT = "substitutions"
CUSTOMER_VIEWS = ("customer_repertoire", "customer_session")
MAX_POOL = 20  # candidates per product read from the store: the pool comes best-first, and each costs a read
# what the ranking and the stock rule need from store_product (fewer fields: less to fetch and decode)
STOCK_FEATURES = ("on_hand", "in_stock_prob", "units_28d", "units_7d")


def _out_of_stock(row: dict[str, Any] | None) -> bool:
    return row is not None and (row.get("on_hand") == 0 or row.get("in_stock_prob") == 0)


def _pool(model: SubstitutionModel, product_id: int) -> list[int]:
    try:
        return model.candidate_pool(product_id)
    except Exception:  # an unknown or broken entry: no candidates for this product, the others still answer
        log.exception("candidate_pool failed for %s", product_id)
        return []


def _own(model: SubstitutionModel, product_id: int, customer_id: int, features) -> list[int]:
    try:
        return model.own_candidates(product_id, customer_id=customer_id, features=features)
    except Exception:  # the pool still answers
        log.exception("own_candidates failed for %s", product_id)
        return []


async def _stock_rows(svc: Services, request: SubstitutionRequest, products: list[int], as_of) -> list[Row]:
    """The store_product rows of these products at the request's store; [] when the store cannot be read."""
    try:
        result = await svc.read([RowRead("store_product", (request.store_id, c), STOCK_FEATURES) for c in products],
                                as_of)
    except StoreUnavailable:
        return []
    return result.rows


async def substitute(svc: Services, request: SubstitutionRequest) -> SubstitutionResponse:
    choice = svc.models.choose("substitutions", request.customer_id)  # the customer's experiment arm, if any
    model = choice.scorer
    product_ids = list(dict.fromkeys(request.product_ids))  # a repeated product is answered once
    requested = set(product_ids)
    pools = {pid: [c for c in _pool(model, pid) if c not in requested][:MAX_POOL] if model else []
             for pid in product_ids}
    candidates = list(dict.fromkeys(c for pool in pools.values() for c in pool))
    stock_reads = [RowRead("store_product", (request.store_id, c), STOCK_FEATURES) for c in candidates]
    decision, stock_rows = await open_decision(svc, ENDPOINT, request, request.customer_id, CUSTOMER_VIEWS,
                                               request.as_of, stock_reads)
    if model is None or choice.unavailable:  # no model, or an unloadable treatment (the control answers)
        decision.fall_back("model_unavailable")
    if model is not None and decision.fallback != "store_unavailable":
        # the customer's own other items of each type join its pool: their stock is read now that the customer
        # row is known (a second round trip, only for items the pool did not already read)
        owned = {pid: [c for c in _own(model, pid, request.customer_id, decision.features)
                       if c not in requested][:OWN_CANDIDATES] for pid in product_ids}
        read = set(candidates)
        extra = list(dict.fromkeys(c for own in owned.values() for c in own if c not in read))
        extra_rows = await _stock_rows(svc, request, extra, request.as_of) if extra else []
        if extra_rows:  # unreadable: the pools alone answer
            candidates, stock_rows = [*candidates, *extra], [*stock_rows, *extra_rows]
            pools = {pid: list(dict.fromkeys([*pools[pid], *owned[pid]])) for pid in product_ids}
    stock = {c: row.values for c, row in zip(candidates, stock_rows, strict=False)}
    never = requested | {c for c, row in zip(candidates, stock_rows, strict=False) if _out_of_stock(row.raw_values)}
    session = decision.features.get("customer_session") or {}
    never.update(session.get("cart_product_ids") or ())
    stock_ages = [row.age_s for row in stock_rows if row.age_s is not None]
    if stock_ages:
        decision.ages["store_product_max"] = max(stock_ages)

    out = []
    for pid in product_ids:
        pool = [c for c in pools[pid] if c not in never]
        ranked: list[Scored] = []
        if pool:
            ranked = guarded(
                decision,
                lambda pid=pid, pool=pool: model.rank(pid, pool, customer_id=request.customer_id,
                                                      features=decision.features,
                                                      stock={c: stock.get(c) for c in pool}, k=request.k),
                lambda pool=pool: [Scored(c, 0.0, "same kind of product") for c in pool[: request.k]],
                "substitution ranker")
        out.append(Substitution(pid, [s for s in ranked if s.product_id not in never][: request.k]))
    version = model.version if model is not None else "none"
    decision_id = record(svc, decision, "substitutions", version, out, surface=ENDPOINT,
                         experiment_id=choice.experiment_id, arm=choice.arm)
    return SubstitutionResponse(decision_id, version, out, decision.fallback)
