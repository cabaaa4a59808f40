"""POST /v1/next-best-action: offers only campaigns active at `now` AND approved by a merchandiser."""

from __future__ import annotations

import logging

from litestar import Controller, post
from litestar.datastructures import State
from litestar.params import JSONBody

from pantry.clock import resolve_now
from serving.controllers._common import count_fallback, customer_fallback
from serving.decisions import new_decision_id
from serving.fallbacks import StoreUnavailable
from serving.online import RowRead
from serving.schemas import NextBestActionRequest, NextBestActionResponse

log = logging.getLogger("pantry.serving.nba")
ENDPOINT = "next_best_action"
CUSTOMER_VIEWS = ("customer_activity", "customer_repertoire")


class NextBestActionController(Controller):
    path = "/v1/next-best-action"
    tags = ("models",)

    @post(status_code=200, summary="The next actions (coupons, buy-again, cross-sell) for a customer")
    async def next_best_action(self, data: JSONBody[NextBestActionRequest], state: State) -> NextBestActionResponse:
        svc = state.services
        model = svc.models.current.next_best_action
        reads = [RowRead(v, (data.customer_id,)) for v in CUSTOMER_VIEWS]
        fallback: str | None = None
        features: dict = {view: None for view in CUSTOMER_VIEWS}
        ages: dict[str, float | None] = {}
        try:
            result = await svc.read(reads, data.as_of)
        except StoreUnavailable:
            fallback = "store_unavailable"
            now = resolve_now(svc.settings.clock, data.as_of, None)
        else:
            now = result.now
            features = result.features(reads)
            ages = result.ages(reads)
            fallback = customer_fallback(result, reads, CUSTOMER_VIEWS)
        campaign_ids = svc.campaigns.offerable(now)
        actions = []
        version = "none"
        if model is None:
            fallback = fallback or "model_unavailable"
        else:
            version = model.version
            try:
                actions = model.actions(features, customer_id=data.customer_id, campaign_ids=campaign_ids, k=data.k,
                                        channel=data.channel, now=now)
            except Exception:
                log.exception("next-best-action model failed")
                fallback = fallback or "model_error"
            # Governance does not depend on the model behaving: an unapproved or inactive campaign is dropped here.
            actions = [a for a in actions if a.campaign_id is None or a.campaign_id in campaign_ids][: data.k]
        answer = NextBestActionResponse(new_decision_id(), version, actions, fallback)
        svc.decisions.record(decision_id=answer.decision_id, endpoint=ENDPOINT, request=data, model_version=version,
                             feature_ages=ages, fallback=fallback, items=actions, now=now)
        count_fallback(ENDPOINT, fallback)
        return answer
