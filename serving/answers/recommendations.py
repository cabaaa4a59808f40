"""Recommendations: the customer views in one read, the recommender, popularity whenever anything is missing.

The shopper's dietary preferences leave products out, and with a `store_id` so does stock: the stock of the model's
k best is read in one more round trip, and only when some are left out does its longer list refill the answer
(serving/answers/stock.py `first_in_stock`)."""

from __future__ import annotations

from pantry.schemas import RecommendationRequest, RecommendationResponse
from pantry.scoring import Scored
from serving.answers import stock
from serving.answers.pipeline import guarded, open_decision, record
from serving.answers.shopper import dietary_exclusions
from serving.services import Services

ENDPOINT = "recommendations"
CUSTOMER_VIEWS = ("customer_session", "customer_activity", "customer_repertoire", "customer_embedding")


async def recommend(svc: Services, request: RecommendationRequest) -> RecommendationResponse:
    choice = svc.models.choose("recommender", request.customer_id)  # the customer's experiment arm, if any
    recommender = choice.scorer
    decision, _ = await open_decision(svc, ENDPOINT, request, request.customer_id, CUSTOMER_VIEWS, request.as_of)
    if choice.unavailable:  # an unloadable treatment: the control's popularity answers (serving/models.py)
        decision.fall_back("model_unavailable")
    session = decision.features.get("customer_session") or {}
    # the asked-for exclusions and what is in the cart now
    exclude = frozenset({*request.exclude_product_ids, *(session.get("cart_product_ids") or ())})
    if recommender is None:
        decision.fall_back("model_unavailable")
    popular_model = recommender or svc.popularity  # the recommender's own popularity, else the dataset snapshot
    banned = dietary_exclusions(svc, decision.preferences)

    def popular(k: int) -> list[Scored]:
        return popular_model.popular(k=k, store_id=request.store_id, exclude=exclude)

    def scored(k: int) -> list[Scored]:  # the recommender's k best; popularity's when it raises (model_error)
        return guarded(decision, lambda: recommender.recommend(
            decision.features, customer_id=request.customer_id, k=k, surface=request.surface, exclude=exclude,
            store_id=request.store_id), lambda: popular(k), "recommender")

    stock_at = request.store_id if decision.fallback != "store_unavailable" else None
    items = await stock.first_in_stock(svc, stock_at, scored if decision.fallback is None else popular, request.k,
                                       lambda p: p not in exclude and p not in banned, request.as_of)
    decision_id = record(svc, decision, "recommender", popular_model.version, items, surface=request.surface,
                         experiment_id=choice.experiment_id, arm=choice.arm)
    return RecommendationResponse(decision_id, popular_model.version, items, decision.fallback)
