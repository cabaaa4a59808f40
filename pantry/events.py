"""The event schema: a msgspec tagged union. JSON on the API, msgpack on the Redis Stream."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

import msgspec

# ---- bounds: every field has one, so no event can overflow the flow's arithmetic or its keys ------------------
# The Complete Journey's largest ids: store 34,280, product 18,122,531, basket 4.1e10, coupon_upc 6.0e10.
STORE_ID_BITS = 19  # store x product pair key = store << PRODUCT_ID_BITS | product: 19 + 44 bits < 2^63 (int64)
PRODUCT_ID_BITS = 44
MAX_STORE_ID = (1 << STORE_ID_BITS) - 1  # 524,287
MAX_PRODUCT_ID = (1 << PRODUCT_ID_BITS) - 1  # 1.76e13
MAX_ID = 1 << 62  # other ids (customer, basket, coupon, campaign): int64 keys in Feast and array("q"); == serving's
MAX_MONEY = 1_000_000.0  # sales_value, discounts: finite, >= 0 (the data's discounts are positive amounts off)
MAX_QUANTITY = 1_000_000  # the data's largest line: 89,638 (fuel)
MAX_ON_HAND = 1_000_000_000
TS_MIN = datetime(2000, 1, 1, tzinfo=UTC)  # event time hard bounds: no time arithmetic in the flow can overflow
TS_MAX = datetime(2100, 1, 1, tzinfo=UTC)
TS_MIN_S, TS_MAX_S = TS_MIN.timestamp(), TS_MAX.timestamp()

Id = Annotated[int, msgspec.Meta(ge=0, le=MAX_ID)]
StoreId = Annotated[int, msgspec.Meta(ge=0, le=MAX_STORE_ID)]
ProductId = Annotated[int, msgspec.Meta(ge=0, le=MAX_PRODUCT_ID)]
Money = Annotated[float, msgspec.Meta(ge=0.0, le=MAX_MONEY)]  # msgspec rejects nan and inf against these bounds
Quantity = Annotated[int, msgspec.Meta(ge=1, le=MAX_QUANTITY)]
EventId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
DecisionId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class BaseEvent(msgspec.Struct, tag_field="type", forbid_unknown_fields=True, frozen=True, kw_only=True):
    event_id: EventId
    ts: datetime  # event time, RFC 3339 with a timezone
    customer_id: Id | None = None
    store_id: StoreId | None = None


class Purchase(BaseEvent, tag="purchase"):
    basket_id: Id
    product_id: ProductId
    quantity: Annotated[int, msgspec.Meta(ge=0, le=MAX_QUANTITY)] = 1
    sales_value: Money = 0.0
    discounts: Money = 0.0
    decision_id: DecisionId | None = None  # the answer that led to it, when the client knows (an outcome)


class AddToCart(BaseEvent, tag="add_to_cart"):
    product_id: ProductId
    quantity: Quantity = 1
    decision_id: DecisionId | None = None


class RemoveFromCart(BaseEvent, tag="remove_from_cart"):
    product_id: ProductId
    quantity: Quantity = 1


class ProductView(BaseEvent, tag="product_view"):
    product_id: ProductId


class Inventory(BaseEvent, tag="inventory"):
    store_id: StoreId  # required here, unlike on the base event
    product_id: ProductId
    on_hand: Annotated[int, msgspec.Meta(ge=0, le=MAX_ON_HAND)]


class CouponRedemption(BaseEvent, tag="coupon_redemption"):
    coupon_upc: Id
    campaign_id: Id
    decision_id: DecisionId | None = None


class SubstitutionFeedback(BaseEvent, tag="substitution_feedback"):
    original_product_id: ProductId
    substitute_product_id: ProductId
    accepted: bool
    decision_id: DecisionId | None = None


# Outcomes of an answer: which decision, which of its items, and for whom (the flow joins outcomes to decisions per
# customer, so an impression or a click without its customer could not be attributed).
class Impression(BaseEvent, tag="impression"):
    """An answer's item shown; without product_id, the whole answer shown (the outcome join counts each item)."""

    customer_id: Id
    decision_id: DecisionId
    product_id: ProductId | None = None


class Click(BaseEvent, tag="click"):
    customer_id: Id
    decision_id: DecisionId
    product_id: ProductId | None = None


Event = (
    Purchase
    | AddToCart
    | RemoveFromCart
    | ProductView
    | Inventory
    | CouponRedemption
    | SubstitutionFeedback
    | Impression
    | Click
)
EVENT_TYPES: tuple[type[BaseEvent], ...] = (
    Purchase,
    AddToCart,
    RemoveFromCart,
    ProductView,
    Inventory,
    CouponRedemption,
    SubstitutionFeedback,
    Impression,
    Click,
)
TYPE_NAMES: tuple[str, ...] = tuple(t.__struct_config__.tag for t in EVENT_TYPES)  # type: ignore[misc]


class InvalidEvent(ValueError):
    """An event that does not fit the schema; the message says why."""


# Decoders and encoders are built once (msgspec's advice: they cache the type's validation plan).
_json_decoder = msgspec.json.Decoder(Event)
_msgpack_decoder = msgspec.msgpack.Decoder(Event)
_msgpack_encoder = msgspec.msgpack.Encoder()
_json_encoder = msgspec.json.Encoder()


def _check(event: Event) -> Event:
    if event.ts.tzinfo is None:
        raise InvalidEvent(f"event {event.event_id!r}: `ts` must carry a timezone (RFC 3339), got {event.ts}")
    if not TS_MIN <= event.ts < TS_MAX:
        raise InvalidEvent(f"event {event.event_id!r}: `ts` {event.ts.isoformat()} is outside "
                           f"[{TS_MIN.isoformat()}, {TS_MAX.isoformat()}) - at `$.ts`")
    return event


def decode_json(raw: bytes | str) -> Event:
    try:
        return _check(_json_decoder.decode(raw))
    except msgspec.ValidationError as exc:
        raise InvalidEvent(str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise InvalidEvent(f"malformed JSON: {exc}") from exc


class _Envelope(msgspec.Struct):
    """One event to convert. msgspec keeps a Struct's validation plan on the class, but rebuilds a bare union's on
    every `convert` call: 1.4 us per event through this envelope against 22 us (docs/DECISIONS.md)."""

    event: Event


_IN_ENVELOPE = re.compile(r"`\$\.event(?=[.\[`])")  # msgspec's path `$.event...` is the event's `$...`


def from_builtins(obj: object) -> Event:
    """An event from already-parsed JSON (dicts, lists, strings: what a web framework hands over)."""
    try:
        return _check(msgspec.convert({"event": obj}, _Envelope).event)
    except msgspec.ValidationError as exc:
        raise InvalidEvent(_IN_ENVELOPE.sub("`$", str(exc))) from exc


class _Batch(msgspec.Struct):
    events: list[Event]


def batch_from_builtins(objs: list) -> list[Event]:
    """Every event of a batch in one conversion (a third of what from_builtins one by one costs); raises InvalidEvent
    at the first bad one, without naming it by index: callers that report each bad event use from_builtins then."""
    try:
        events = msgspec.convert({"events": objs}, _Batch).events
    except msgspec.ValidationError as exc:
        raise InvalidEvent(str(exc)) from exc
    for event in events:
        _check(event)
    return events


def decode_msgpack(raw: bytes) -> Event:
    try:
        return _check(_msgpack_decoder.decode(raw))
    except msgspec.ValidationError as exc:
        raise InvalidEvent(str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise InvalidEvent(f"malformed msgpack: {exc}") from exc


def encode_json(event: Event) -> bytes:
    return _json_encoder.encode(event)


def encode_msgpack(event: Event) -> bytes:
    return _msgpack_encoder.encode(event)


def to_builtins(event: Event) -> dict:
    return msgspec.to_builtins(event)
