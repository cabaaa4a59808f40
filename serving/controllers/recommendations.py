"""POST /v1/recommendations: customer views in one read, the recommender, popularity when anything is missing."""

from __future__ import annotations

import logging

from litestar import Controller, post
from litestar.datastructures import State
from litestar.params import JSONBody

from serving.controllers._common import CUSTOMER_VIEWS, count_fallback, customer_fallback
from serving.decisions import new_decision_id
from serving.fallbacks import StoreUnavailable
from serving.online import RowRead
from serving.schemas import RecommendationRequest, RecommendationResponse

log = logging.getLogger("pantry.serving.recommendations")
ENDPOINT = "recommendations"


class RecommendationsController(Controller):
    path = "/v1/recommendations"
    tags = ("models",)

    @post(status_code=200, summary="Top-k products for a customer")
    async def recommend(self, data: JSONBody[RecommendationRequest], state: State) -> RecommendationResponse:
        svc = state.services
        recommender = svc.models.current.recommender
        reads = [RowRead(view, (data.customer_id,)) for view in CUSTOMER_VIEWS]
        exclude = set(data.exclude_product_ids)
        fallback: str | None = None
        features = {}
        ages: dict[str, float | None] = {}
        now = data.as_of
        try:
            result = await svc.read(reads, data.as_of)
        except StoreUnavailable:
            fallback = "store_unavailable"
        else:
            now = result.now
            features = result.features(reads)
            ages = result.ages(reads)
            session = features.get("customer_session") or {}
            exclude.update(session.get("cart_product_ids") or ())
            fallback = customer_fallback(result, reads, CUSTOMER_VIEWS)
        if fallback is None and recommender is None:
            fallback = "model_unavailable"
        frozen = frozenset(exclude)
        items = None
        if fallback is None:
            try:
                items = recommender.recommend(features, customer_id=data.customer_id, k=data.k, surface=data.surface,
                                              exclude=frozen, store_id=data.store_id)
            except Exception:  # a model bug degrades to popularity, never a 5xx
                log.exception("recommender failed")
                fallback = "model_error"
        if items is None:
            items = (recommender or svc.popularity).popular(k=data.k, store_id=data.store_id, exclude=frozen)
        items = [item for item in items if item.product_id not in frozen][: data.k]
        model_version = (recommender or svc.popularity).version
        decision_id = new_decision_id()
        svc.decisions.record(decision_id=decision_id, endpoint=ENDPOINT, request=data, model_version=model_version,
                             feature_ages=ages, fallback=fallback, items=items, now=now)
        count_fallback(ENDPOINT, fallback)
        return RecommendationResponse(decision_id, model_version, items, fallback)
