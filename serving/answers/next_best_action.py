"""Next best action: offers only campaigns active at `now` AND approved by a merchandiser.

The shopper's dietary preferences leave out a product action whose product they exclude and a coupon all of whose
products they exclude; with a `store_id`, an action whose product (a coupon: all its products) is out of stock there
is left out too (serving/answers/stock.py). The model is asked for OVERFETCH x k actions so that k still come back."""

from __future__ import annotations

from pantry.schemas import NextBestActionRequest, NextBestActionResponse
from pantry.scoring import Action
from serving.answers import channel, stock
from serving.answers.pipeline import guarded, open_decision, record
from serving.answers.shopper import action_allowed, dietary_exclusions
from serving.services import Services

ENDPOINT = "next_best_action"
# customer_session: the cart, which a cross_sell action completes
CUSTOMER_VIEWS = ("customer_activity", "customer_repertoire", "customer_session")


async def next_best_action(svc: Services, request: NextBestActionRequest) -> NextBestActionResponse:
    channel.check(request)  # before any read: what the channel cannot answer is a 400 (serving/answers/channel.py)
    choice = svc.models.choose("next_best_action", request.customer_id)  # the customer's experiment arm, if any
    model = choice.scorer
    decision, _ = await open_decision(svc, ENDPOINT, request, request.customer_id, CUSTOMER_VIEWS, request.as_of)
    if choice.unavailable:  # an unloadable treatment: the control answers, with the fallback (serving/models.py)
        decision.fall_back("model_unavailable")
    campaign_ids = svc.campaigns.offerable(decision.now)
    actions: list[Action] = []
    version = "none"
    banned = dietary_exclusions(svc, decision.preferences)
    restricted = banned or request.store_id is not None or channel.restricts(request.channel)
    wanted = request.k * stock.OVERFETCH if restricted else request.k
    if model is None:
        decision.fall_back("model_unavailable")
    else:
        version = model.version
        # the model answers from its own tables even without fresh features (a cold start gets none of its coupons)
        actions = guarded(decision, lambda: model.actions(
            decision.features, customer_id=request.customer_id, campaign_ids=campaign_ids, k=wanted,
            channel=request.channel, now=decision.now), list, "next-best-action model")
        # Governance does not depend on the model behaving: an unapproved or inactive campaign is dropped here.
        actions = [a for a in actions if (a.campaign_id is None or a.campaign_id in campaign_ids)
                   and action_allowed(svc, banned, a)]
        actions = channel.for_channel(request.channel, actions)
        if request.store_id is not None and decision.fallback != "store_unavailable":
            actions = await stock.actions_in_stock(svc, request.store_id, actions, request.as_of)
        actions = actions[: request.k]
    decision_id = record(svc, decision, "next_best_action", version, actions, surface=request.channel,
                         experiment_id=choice.experiment_id, arm=choice.arm)
    return NextBestActionResponse(decision_id, version, actions, decision.fallback)
