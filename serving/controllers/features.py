"""POST /v1/features (serving/online_features.py builds the answer)."""

from __future__ import annotations

from litestar import Controller, post
from litestar.params import JSONBody

from pantry.schemas import FeaturesRequest, FeaturesResponse
from serving.online_features import online_features
from serving.services import Injected


class FeaturesController(Controller):
    path = "/v1/features"
    tags = ("features",)

    @post(status_code=200, summary="Online features in the shape of Feast's /get-online-features (plus ages)")
    async def get_online_features(self, data: JSONBody[FeaturesRequest], services: Injected) -> FeaturesResponse:
        return await online_features(services, data)
