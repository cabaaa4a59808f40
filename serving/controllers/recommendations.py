"""POST /v1/recommendations (serving/answers/recommendations.py decides)."""

from __future__ import annotations

from litestar import Controller, post
from litestar.params import JSONBody

from pantry.schemas import RecommendationRequest, RecommendationResponse
from serving.answers.recommendations import recommend
from serving.services import Injected


class RecommendationsController(Controller):
    path = "/v1/recommendations"
    tags = ("models",)

    @post(status_code=200, summary="Top-k products for a customer")
    async def recommend(self, data: JSONBody[RecommendationRequest], services: Injected) -> RecommendationResponse:
        return await recommend(services, data)
