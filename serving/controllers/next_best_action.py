"""POST /v1/next-best-action (serving/answers/next_best_action.py decides)."""

from __future__ import annotations

from litestar import Controller, post
from litestar.params import JSONBody

from pantry.schemas import NextBestActionRequest, NextBestActionResponse
from serving.answers.next_best_action import next_best_action
from serving.services import Injected


class NextBestActionController(Controller):
    path = "/v1/next-best-action"
    tags = ("models",)

    @post(status_code=200, summary="The next actions (coupons, buy-again, cross-sell) for a customer")
    async def next_best_action(self, data: JSONBody[NextBestActionRequest],
                               services: Injected) -> NextBestActionResponse:
        return await next_best_action(services, data)
