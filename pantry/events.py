"""The event schema: a msgspec tagged union. JSON on the API, msgpack on the Redis Stream."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

Id = Annotated[int, msgspec.Meta(ge=0)]
EventId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class BaseEvent(msgspec.Struct, tag_field="type", forbid_unknown_fields=True, frozen=True, kw_only=True):
    event_id: EventId
    ts: datetime  # event time, RFC 3339 with a timezone
    customer_id: Id | None = None
    store_id: Id | None = None


class Purchase(BaseEvent, tag="purchase"):
    basket_id: Id
    product_id: Id
    quantity: Annotated[int, msgspec.Meta(ge=0)] = 1
    sales_value: float = 0.0
    discounts: float = 0.0


class AddToCart(BaseEvent, tag="add_to_cart"):
    product_id: Id
    quantity: Annotated[int, msgspec.Meta(ge=1)] = 1


class RemoveFromCart(BaseEvent, tag="remove_from_cart"):
    product_id: Id
    quantity: Annotated[int, msgspec.Meta(ge=1)] = 1


class ProductView(BaseEvent, tag="product_view"):
    product_id: Id


class Inventory(BaseEvent, tag="inventory"):
    store_id: Id  # required here, unlike on the base event
    product_id: Id
    on_hand: Annotated[int, msgspec.Meta(ge=0)]


class CouponRedemption(BaseEvent, tag="coupon_redemption"):
    coupon_upc: Id
    campaign_id: Id


class SubstitutionFeedback(BaseEvent, tag="substitution_feedback"):
    original_product_id: Id
    substitute_product_id: Id
    accepted: bool


class Impression(BaseEvent, tag="impression"):
    decision_id: str
    product_id: Id | None = None


class Click(BaseEvent, tag="click"):
    decision_id: str
    product_id: Id | None = None


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
    return event


def decode_json(raw: bytes | str) -> Event:
    try:
        return _check(_json_decoder.decode(raw))
    except msgspec.ValidationError as exc:
        raise InvalidEvent(str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise InvalidEvent(f"malformed JSON: {exc}") from exc


def from_builtins(obj: object) -> Event:
    """An event from already-parsed JSON (dicts, lists, strings: what a web framework hands over)."""
    try:
        return _check(msgspec.convert(obj, Event))
    except msgspec.ValidationError as exc:
        raise InvalidEvent(str(exc)) from exc


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
