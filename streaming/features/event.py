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


class Ev(msgspec.Struct, array_like=True, gc=False, frozen=True):
    """The flow's compact event: what the features need, with event time as epoch seconds."""

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


def from_event(event: ev_schema.Event) -> Ev:
    """A validated pantry event as the flow's compact event."""
    kind = type(event).__struct_config__.tag
    t = event.ts.timestamp()
    match event:
        case ev_schema.Purchase():
            return Ev(event.event_id, kind, t, event.customer_id, event.store_id, event.product_id,
                      event.basket_id, event.quantity, event.sales_value)
        case ev_schema.AddToCart() | ev_schema.RemoveFromCart():
            return Ev(event.event_id, kind, t, event.customer_id, event.store_id, event.product_id,
                      None, event.quantity)
        case ev_schema.Inventory():
            return Ev(event.event_id, kind, t, event.customer_id, event.store_id, event.product_id,
                      on_hand=event.on_hand)
        case ev_schema.ProductView() | ev_schema.Click() | ev_schema.Impression():
            return Ev(event.event_id, kind, t, event.customer_id, event.store_id, getattr(event, "product_id", None))
        case _:
            return Ev(event.event_id, kind, t, event.customer_id, event.store_id)


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


