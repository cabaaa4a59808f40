"""POST /v1/substitutions (serving/answers/substitutions.py decides)."""

from __future__ import annotations

from litestar import Controller, post
from litestar.params import JSONBody

from pantry.schemas import SubstitutionRequest, SubstitutionResponse
from serving.answers.substitutions import substitute
from serving.services import Injected


class SubstitutionsController(Controller):
    path = "/v1/substitutions"
    tags = ("models",)

    @post(status_code=200, summary="In-stock substitutes for products, ranked for this customer")
    async def substitute(self, data: JSONBody[SubstitutionRequest], services: Injected) -> SubstitutionResponse:
        return await substitute(services, data)
