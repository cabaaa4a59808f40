"""The flow's compact event and the time rules every feature shares (event time, windows, lateness).

Times are float epoch seconds (event time).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import msgspec

from pantry import events as ev_schema

MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0
LATENESS_S = 10 * MINUTE  # events older than (max event time seen - this) are late
NO_TIME = -1e300  # "never" as a float that msgpack and comparisons both handle

Values = dict[str, Any]  # a feature row: {feature: value}


FORGET = "forget"  # not an event: an erasure marker (pantry.erasure) for the customer's shard; never a feature


class Ev(msgspec.Struct, array_like=True, gc=False, frozen=True, omit_defaults=True):
    """The flow's compact event: what the features and the outcome join need, with event time as epoch seconds.
    Fields are only ever appended, with defaults (recovery snapshots and pickled work hold Evs); trailing defaults
    are not encoded (omit_defaults), so the outcome fields cost a replay nothing on the wire."""

    event_id: str
    kind: str
    t: float
    customer_id: int | None = None
    store_id: int | None = None
    product_id: int | None = None
    basket_id: int | None = None
    quantity: int = 0
    sales_value: float = 0.0
    on_hand: int | None = None
    # outcomes (streaming/outcomes.py): the answer the event reports on, and what of it
    decision_id: str | None = None
    accepted: bool | None = None  # substitution_feedback
    campaign_id: int | None = None  # coupon_redemption
    coupon_upc: int | None = None  # coupon_redemption
    original_product_id: int | None = None  # substitution_feedback: the product that was substituted
    discounts: float = 0.0  # purchase: kept for the event archive (streaming/event_archive.py), no feature reads it


def from_event(event: ev_schema.Event) -> Ev:
    """A validated pantry event as the flow's compact event."""
    kind = type(event).__struct_config__.tag
    t = event.ts.timestamp()
    match event:
        case ev_schema.Purchase():
            return Ev(event.event_id, kind, t, event.customer_id, event.store_id, event.product_id,
                      event.basket_id, event.quantity, event.sales_value, decision_id=event.decision_id,
                      discounts=event.discounts)
        case ev_schema.AddToCart():
            return Ev(event.event_id, kind, t, event.customer_id, event.store_id, event.product_id,
                      None, event.quantity, decision_id=event.decision_id)
        case ev_schema.RemoveFromCart():
            return Ev(event.event_id, kind, t, event.customer_id, event.store_id, event.product_id,
                      None, event.quantity)
        case ev_schema.Inventory():
            return Ev(event.event_id, kind, t, event.customer_id, event.store_id, event.product_id,
                      on_hand=event.on_hand)
        case ev_schema.Click() | ev_schema.Impression():
            return Ev(event.event_id, kind, t, event.customer_id, event.store_id, event.product_id,
                      decision_id=event.decision_id)
        case ev_schema.ProductView():
            return Ev(event.event_id, kind, t, event.customer_id, event.store_id, event.product_id)
        case ev_schema.CouponRedemption():
            return Ev(event.event_id, kind, t, event.customer_id, event.store_id, decision_id=event.decision_id,
                      campaign_id=event.campaign_id, coupon_upc=event.coupon_upc)
        case ev_schema.SubstitutionFeedback():
            # product_id: the substitute (the event archive keeps it as substitute_product_id)
            return Ev(event.event_id, kind, t, event.customer_id, event.store_id, event.substitute_product_id,
                      decision_id=event.decision_id, accepted=event.accepted,
                      original_product_id=event.original_product_id)
        case _:
            return Ev(event.event_id, kind, t, event.customer_id, event.store_id)


_MAX_ID, _MAX_STORE, _MAX_PRODUCT = ev_schema.MAX_ID, ev_schema.MAX_STORE_ID, ev_schema.MAX_PRODUCT_ID
_MAX_QUANTITY, _MAX_MONEY, _MAX_ON_HAND = ev_schema.MAX_QUANTITY, ev_schema.MAX_MONEY, ev_schema.MAX_ON_HAND
_TS_MIN, _TS_MAX = ev_schema.TS_MIN_S, ev_schema.TS_MAX_S


def admit(e: Ev) -> str | None:
    """Why the flow must not take this compact event (None: it may). The bounds of pantry.events, checked again on
    every event whatever its path (a replay's rows, a raw XADD): within them no feature arithmetic can overflow
    and every key fits (validate before mutate: a feature function never sees an event it cannot fold). Inlined
    checks (no call per field): 0.8-1.0 us per event (docs/DECISIONS.md), on the gate's path of every replay."""
    t, cid, sid, pid, bid, q, sv, oh = (e.t, e.customer_id, e.store_id, e.product_id, e.basket_id, e.quantity,
                                        e.sales_value, e.on_hand)
    if type(t) is not float or not _TS_MIN <= t < _TS_MAX:  # also nan
        return f"ts {t!r} outside [{_TS_MIN:.0f}, {_TS_MAX:.0f}) epoch seconds"
    if type(e.event_id) is not str or not 0 < len(e.event_id) <= 128:
        return "event_id: empty, longer than 128 characters or not a string"
    if cid is not None and (type(cid) is not int or not 0 <= cid <= _MAX_ID):
        return f"customer_id {cid!r} outside [0, {_MAX_ID}]"
    if sid is not None and (type(sid) is not int or not 0 <= sid <= _MAX_STORE):
        return f"store_id {sid!r} outside [0, {_MAX_STORE}]"
    if pid is not None and (type(pid) is not int or not 0 <= pid <= _MAX_PRODUCT):
        return f"product_id {pid!r} outside [0, {_MAX_PRODUCT}]"
    if bid is not None and (type(bid) is not int or not 0 <= bid <= _MAX_ID):
        return f"basket_id {bid!r} outside [0, {_MAX_ID}]"
    if type(q) is not int or not 0 <= q <= _MAX_QUANTITY:
        return f"quantity {q!r} outside [0, {_MAX_QUANTITY}]"
    if type(sv) is not float or not 0.0 <= sv <= _MAX_MONEY:  # also nan and inf
        return f"sales_value {sv!r} outside [0, {_MAX_MONEY:.0f}]"
    if oh is not None and (type(oh) is not int or not 0 <= oh <= _MAX_ON_HAND):
        return f"on_hand {oh!r} outside [0, {_MAX_ON_HAND}]"
    if (e.decision_id is not None or e.accepted is not None or e.campaign_id is not None or e.coupon_upc is not None
            or e.original_product_id is not None):  # outcome fields (a replay's events have none: ~0.1 us)
        return _admit_outcome(e)
    return None


# events some feature folds (customer.py: the session kinds and purchases; store.py: purchases and inventory). The
# others (an impression, a coupon redemption) reach the outcome join only: sent to the customer shards, each would
# move its customer's `as_of` and rewrite two rows for nothing (~3,000/s of impressions at 300 answers/s). A
# substitution's feedback is routed by the gate on its own (streaming/features/substitution.py: its customer's shard
# and its original product's store shard)
FEATURE_KINDS = frozenset({"purchase", "add_to_cart", "remove_from_cart", "product_view", "click", "inventory"})

# events that report on an answer (streaming/outcomes.py joins them to the decision log)
OUTCOME_KINDS = frozenset({"impression", "click", "add_to_cart", "purchase", "coupon_redemption",
                           "substitution_feedback"})


def _admit_outcome(e: Ev) -> str | None:
    d, a, camp, upc, orig = e.decision_id, e.accepted, e.campaign_id, e.coupon_upc, e.original_product_id
    if d is not None and (type(d) is not str or not 0 < len(d) <= 128):
        return "decision_id: empty, longer than 128 characters or not a string"
    if a is not None and type(a) is not bool:
        return f"accepted {a!r} is not a boolean"
    for name, v, hi in (("campaign_id", camp, _MAX_ID), ("coupon_upc", upc, _MAX_ID),
                        ("original_product_id", orig, _MAX_PRODUCT)):
        if v is not None and (type(v) is not int or not 0 <= v <= hi):
            return f"{name} {v!r} outside [0, {hi}]"
    return None


def next_change(times: Iterable[float], as_of: float, windows: tuple[float, ...]) -> float:
    """The first instant after `as_of` at which an entry (event time) leaves a window (lengths ascending) that
    holds it at `as_of`: until then the windowed values stay as they are. inf if nothing is in a window.
    Computed from the state alone, so when a refresh re-evaluates an entity never depends on emission timing."""
    best = math.inf
    for t in times:
        if t > as_of:
            continue
        for w in windows:
            end = t + w
            if end > as_of:
                if end < best:
                    best = end
                break
    return best


def cached_next_change(st, compute) -> float:
    """next_change, remembered in the state until the state changes (refreshes then cost O(1) per entity)."""
    if st.nc is None:
        st.nc = compute(st)
    return st.nc


