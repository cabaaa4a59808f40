"""The outcome rules: which events a visit yields, given what the service showed during it. Pure functions.

For a visit (load_tests/simulate/visits.py) whose recommendations (for_you, k 10), next best actions and
substitutions were answered:
  - impression: one per shown item: every recommended product, every action (its product_id; a coupon action
    without a product gets an impression with none, which the join reads as "the whole answer shown": it adds no
    impression once the actions' products have theirs), every offered substitute; with the answer's decision_id.
  - click: a recommended product that is in the real basket; an action whose product is in the basket, or whose
    coupon the shopper redeemed in this visit. Before the purchase it led to.
  - purchase: every real line of the basket, with the decision_id of the recommendation that showed the product,
    else of the action that named it, else of the substitution that offered it; without one otherwise.
  - substitution_feedback: per asked product, accepted=true for the offered candidate that is what the shopper
    really bought of that type in this visit, else accepted=false for the top candidate; none when nothing was
    offered. With the substitution's decision_id.
  - coupon_redemption: every coupon the household really redeemed that day (with its last visit of the day), with
    the decision_id of the next-best-action answer that offered that coupon to them that day (this visit or an
    earlier one), without one otherwise.
Every event carries the visit's real time; ids are stable (the data's own for purchases and redemptions, derived
from the decision id for the others), so a resent batch is dropped as a duplicate by the flow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from load_tests.simulate.visits import Visit
from pantry import events as ev


@dataclass(frozen=True)
class ShownAction:
    product_id: int | None
    coupon_upc: int | None
    campaign_id: int | None


@dataclass(frozen=True)
class Shown:
    """What the service answered during one visit (None: that request failed or was not made)."""

    rec_decision: str | None = None
    recommended: tuple[int, ...] = ()
    nba_decision: str | None = None
    actions: tuple[ShownAction, ...] = ()
    sub_decision: str | None = None
    offered: Mapping[int, tuple[int, ...]] = field(default_factory=dict)  # asked product -> candidates, best first
    # coupon_upc -> decision_id: coupons offered to this household earlier the same day (and in this visit)
    coupons_today: Mapping[int, str] = field(default_factory=dict)


def _base(visit: Visit, event_id: str) -> dict:
    return {"event_id": event_id, "ts": visit.ts, "customer_id": visit.customer_id, "store_id": visit.store_id}


def impressions(visit: Visit, shown: Shown) -> list[ev.BaseEvent]:
    out: list[ev.BaseEvent] = []
    if shown.rec_decision:
        out += [ev.Impression(decision_id=shown.rec_decision, product_id=p,
                              **_base(visit, f"sim-{shown.rec_decision}-i{rank}"))
                for rank, p in enumerate(shown.recommended)]
    if shown.nba_decision:
        out += [ev.Impression(decision_id=shown.nba_decision, product_id=a.product_id,
                              **_base(visit, f"sim-{shown.nba_decision}-i{rank}"))
                for rank, a in enumerate(shown.actions)]
    if shown.sub_decision:
        rank = 0
        for candidates in shown.offered.values():
            for p in candidates:
                out.append(ev.Impression(decision_id=shown.sub_decision, product_id=p,
                                         **_base(visit, f"sim-{shown.sub_decision}-i{rank}")))
                rank += 1
    return out


def substitution_feedback(visit: Visit, shown: Shown) -> list[ev.BaseEvent]:
    if not shown.sub_decision:
        return []
    out: list[ev.BaseEvent] = []
    for ask in visit.substitution_asks:
        candidates = shown.offered.get(ask.usual_product_id) or ()
        if not candidates:
            continue
        accepted = ask.bought_product_id in candidates
        chosen = ask.bought_product_id if accepted else candidates[0]
        out.append(ev.SubstitutionFeedback(
            original_product_id=ask.usual_product_id, substitute_product_id=chosen, accepted=accepted,
            decision_id=shown.sub_decision, **_base(visit, f"sim-{shown.sub_decision}-s{ask.usual_product_id}")))
    return out


def purchase_decisions(visit: Visit, shown: Shown) -> dict[int, str]:
    """product -> the decision that led to its purchase (recommendation, else action, else substitution)."""
    basket = visit.product_ids
    led: dict[int, str] = {}
    if shown.sub_decision:
        for ask in visit.substitution_asks:
            if ask.bought_product_id in (shown.offered.get(ask.usual_product_id) or ()):
                led[ask.bought_product_id] = shown.sub_decision
    if shown.nba_decision:
        for a in shown.actions:
            if a.product_id is not None and a.product_id in basket:
                led[a.product_id] = shown.nba_decision
    if shown.rec_decision:
        for p in shown.recommended:
            if p in basket:
                led[p] = shown.rec_decision
    return led


def clicks(visit: Visit, shown: Shown) -> list[ev.BaseEvent]:
    basket, redeemed = visit.product_ids, {r.coupon_upc for r in visit.redemptions}
    out: list[ev.BaseEvent] = []
    if shown.rec_decision:
        out += [ev.Click(decision_id=shown.rec_decision, product_id=p,
                         **_base(visit, f"sim-{shown.rec_decision}-c{rank}"))
                for rank, p in enumerate(shown.recommended) if p in basket]
    if shown.nba_decision:
        out += [ev.Click(decision_id=shown.nba_decision, product_id=a.product_id,
                         **_base(visit, f"sim-{shown.nba_decision}-c{rank}"))
                for rank, a in enumerate(shown.actions)
                if (a.product_id is not None and a.product_id in basket) or
                (a.coupon_upc is not None and a.coupon_upc in redeemed)]
    return out


def purchases(visit: Visit, shown: Shown) -> list[ev.BaseEvent]:
    led = purchase_decisions(visit, shown)
    return [ev.Purchase(basket_id=visit.basket_id or 0, product_id=line.product_id, quantity=line.quantity,
                        sales_value=line.sales_value, discounts=line.discounts,
                        decision_id=led.get(line.product_id), **_base(visit, line.event_id))
            for line in visit.lines]


def redemptions(visit: Visit, shown: Shown) -> list[ev.BaseEvent]:
    return [ev.CouponRedemption(coupon_upc=r.coupon_upc, campaign_id=r.campaign_id,
                                decision_id=shown.coupons_today.get(r.coupon_upc), **_base(visit, r.event_id))
            for r in visit.redemptions]


def outcome_events(visit: Visit, shown: Shown) -> list[ev.BaseEvent]:
    """All of a visit's events, in the order a shopper makes them: what they saw, what they clicked, the
    substitutes they took or refused, what they bought, the coupons they redeemed."""
    return (impressions(visit, shown) + clicks(visit, shown) + substitution_feedback(visit, shown)
            + purchases(visit, shown) + redemptions(visit, shown))


def count_by_type(events: Sequence[ev.BaseEvent]) -> dict[str, int]:
    """Outcome counts for the summary: per type, plus purchases/redemptions with a decision and accepted
    substitutions."""
    out: dict[str, int] = {}
    for e in events:
        name = type(e).__struct_config__.tag  # type: ignore[attr-defined]
        out[name] = out.get(name, 0) + 1
        if isinstance(e, ev.Purchase | ev.CouponRedemption) and e.decision_id:
            out[f"{name} with decision"] = out.get(f"{name} with decision", 0) + 1
        if isinstance(e, ev.SubstitutionFeedback) and e.accepted:
            out["substitution accepted"] = out.get("substitution accepted", 0) + 1
    return out
