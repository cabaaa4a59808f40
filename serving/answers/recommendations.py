"""Recommendations: the customer views in one read, the recommender, popularity whenever anything is missing.

The shopper's dietary preferences leave products out, and with a `store_id` so does stock: the model is asked for
OVERFETCH x k items, and the stock of those left is read in one more round trip (serving/answers/stock.py)."""

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
    # more than k when some may be left out (diet, stock), so that k still come back where possible
    wanted = request.k * stock.OVERFETCH if banned or request.store_id is not None else request.k

    def popular() -> list[Scored]:
        return popular_model.popular(k=wanted, store_id=request.store_id, exclude=exclude)

    def scored(k: int) -> list[Scored]:
        return recommender.recommend(decision.features, customer_id=request.customer_id, k=k,
                                     surface=request.surface, exclude=exclude, store_id=request.store_id)

    if decision.fallback is None:
        items = guarded(decision, lambda: stock.refilled(scored, request.k, wanted), popular, "recommender")
    else:
        items = popular()
    items = [item for item in items if item.product_id not in exclude and item.product_id not in banned]
    if request.store_id is not None and decision.fallback != "store_unavailable":
        gone = await stock.out_of_stock_at(svc, request.store_id, (i.product_id for i in items), request.as_of)
        items = [item for item in items if item.product_id not in gone]
    items = items[: request.k]
    decision_id = record(svc, decision, "recommender", popular_model.version, items, surface=request.surface,
                         experiment_id=choice.experiment_id, arm=choice.arm)
    return RecommendationResponse(decision_id, popular_model.version, items, decision.fallback)
