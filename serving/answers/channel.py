"""The channel rule of next-best-action: which kinds of action each channel may carry, and what it needs.

The data set has no channel, so the ranker cannot learn one; the channel is a rule the answer applies
(docs/DECISIONS.md "Next best action per channel"):
- `app`, `web`: the shopper is online now: coupons, buy-again nudges and a cross-sell from the live cart.
- `email`: read hours after it is sent, when the cart it would complete is gone: coupons and buy-again only.
- `in_store`: the shopper is in one store, so the answer must be for that store: a `store_id` is required (400
  without), and its stock rule then leaves out a coupon whose products are all out there
  (serving/answers/stock.py).
"""

from __future__ import annotations

from litestar.exceptions import ValidationException

from pantry.schemas import NextBestActionRequest
from pantry.scoring import Action, ActionType, Channel

ALL_ACTIONS: frozenset[ActionType] = frozenset({"coupon", "buy_again", "cross_sell"})
CHANNEL_ACTIONS: dict[Channel, frozenset[ActionType]] = {
    "app": ALL_ACTIONS,
    "web": ALL_ACTIONS,
    "email": frozenset({"coupon", "buy_again"}),
    "in_store": ALL_ACTIONS,
}
NEEDS_STORE: frozenset[Channel] = frozenset({"in_store"})


def check(request: NextBestActionRequest) -> None:
    """Raise a 400 (ValidationException) when the request lacks what its channel needs."""
    if request.channel in NEEDS_STORE and request.store_id is None:
        raise ValidationException(detail=f"channel {request.channel} needs store_id (the store the shopper is in)")


def restricts(channel: Channel) -> bool:
    """True when the channel leaves out some kind of action (the answer then asks the model for more)."""
    return CHANNEL_ACTIONS[channel] != ALL_ACTIONS


def for_channel(channel: Channel, actions: list[Action]) -> list[Action]:
    """The actions the channel may carry, in order."""
    allowed = CHANNEL_ACTIONS[channel]
    return actions if allowed == ALL_ACTIONS else [a for a in actions if a.action_type in allowed]
