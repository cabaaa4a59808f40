"""POST /v1/substitutions: candidate pools, then ONE read of store_product rows (store, candidate) plus customer
views, then the model's ranking.

Never offered: any product the request asks substitutes for (they are all out of stock for this customer), an item
already in the customer's cart, and a candidate whose store_product row says on_hand == 0 or in_stock_prob == 0
(the model's ranking applies the same stock rule; it is checked here too so the model_error fallback obeys it).
A stale store_product row still counts for this rule: an old "none left" is no reason to offer the item."""

from __future__ import annotations

import logging

from litestar import Controller, post
from litestar.datastructures import State
from litestar.params import JSONBody

from pantry.scoring import Scored
from serving.controllers._common import count_fallback, customer_fallback
from serving.decisions import new_decision_id
from serving.fallbacks import StoreUnavailable
from serving.online import RowRead
from serving.schemas import Substitution, SubstitutionRequest, SubstitutionResponse

log = logging.getLogger("pantry.serving.substitutions")
ENDPOINT = "substitutions"
CUSTOMER_VIEWS = ("customer_repertoire", "customer_session")
MAX_POOL = 20  # candidates per product read from the store: the pool comes best-first, and each costs a read
# what the ranking and the stock rule need from store_product (fewer fields: less to fetch and decode)
STOCK_FEATURES = ("on_hand", "in_stock_prob", "units_28d", "units_7d")


def _out_of_stock(row) -> bool:
    return row is not None and (row.get("on_hand") == 0 or row.get("in_stock_prob") == 0)


class SubstitutionsController(Controller):
    path = "/v1/substitutions"
    tags = ("models",)

    @post(status_code=200, summary="In-stock substitutes for products, ranked for this customer")
    async def substitute(self, data: JSONBody[SubstitutionRequest], state: State) -> SubstitutionResponse:
        svc = state.services
        model = svc.models.current.substitutions
        product_ids = list(dict.fromkeys(data.product_ids))  # a repeated product is answered once
        if model is None:
            answer = SubstitutionResponse(new_decision_id(), "none", [Substitution(p, []) for p in product_ids],
                                          "model_unavailable")
            self._record(svc, data, answer, {}, data.as_of)
            return answer

        requested = set(product_ids)
        pools: dict[int, list[int]] = {}
        for pid in product_ids:
            try:
                pool = model.candidate_pool(pid)
            except Exception:
                log.exception("candidate_pool failed for %s", pid)
                pool = []
            pools[pid] = [c for c in pool if c not in requested][:MAX_POOL]
        candidates = list(dict.fromkeys(c for pool in pools.values() for c in pool))

        customer_reads = [RowRead(v, (data.customer_id,)) for v in CUSTOMER_VIEWS]
        stock_reads = [RowRead("store_product", (data.store_id, c), STOCK_FEATURES) for c in candidates]
        fallback: str | None = None
        features: dict = {}
        stock: dict[int, dict | None] = {}
        never: set[int] = set(requested)  # grows with the cart and the zero-stock candidates once read
        ages: dict[str, float | None] = {}
        now = data.as_of
        try:
            result = await svc.read([*customer_reads, *stock_reads], data.as_of)
        except StoreUnavailable:
            fallback = "store_unavailable"
        else:
            now = result.now
            n = len(customer_reads)
            features = {r.view: row.values for r, row in zip(customer_reads, result.rows[:n], strict=True)}
            ages = {r.view: row.age_s for r, row in zip(customer_reads, result.rows[:n], strict=True)}
            stock = {c: row.values for c, row in zip(candidates, result.rows[n:], strict=True)}
            never.update(c for c, row in zip(candidates, result.rows[n:], strict=True)
                         if _out_of_stock(row.raw_values))
            session = features.get("customer_session") or {}
            never.update(session.get("cart_product_ids") or ())
            stock_ages = [row.age_s for row in result.rows[n:] if row.age_s is not None]
            if stock_ages:
                ages["store_product_max"] = max(stock_ages)
            fallback = customer_fallback(result.__class__(result.now, result.rows[:n]), customer_reads,
                                         CUSTOMER_VIEWS)
        out = []
        for pid in product_ids:
            pool = [c for c in pools[pid] if c not in never]
            ranked: list[Scored] = []
            if pool:
                try:
                    ranked = model.rank(pid, pool, customer_id=data.customer_id, features=features,
                                        stock={c: stock.get(c) for c in pool}, k=data.k)
                except Exception:
                    log.exception("substitution rank failed for %s", pid)
                    fallback = fallback or "model_error"
                    ranked = [Scored(c, 0.0, "same kind of product") for c in pool[: data.k]]
            ranked = [s for s in ranked if s.product_id not in never]
            out.append(Substitution(pid, ranked[: data.k]))
        answer = SubstitutionResponse(new_decision_id(), model.version, out, fallback)
        self._record(svc, data, answer, ages, now)
        return answer

    @staticmethod
    def _record(svc, data, answer: SubstitutionResponse, ages, now) -> None:
        svc.decisions.record(decision_id=answer.decision_id, endpoint=ENDPOINT, request=data,
                             model_version=answer.model_version, feature_ages=ages, fallback=answer.fallback,
                             items=answer.substitutions, now=now)
        count_fallback(ENDPOINT, answer.fallback)
