from datetime import UTC, datetime

import msgspec
import pytest

from pantry import events


def _purchase(**kw):
    base = dict(event_id="e1", ts=datetime(2017, 3, 1, 12, tzinfo=UTC), customer_id=7, store_id=3,
                basket_id=11, product_id=99, quantity=2, sales_value=3.5, discounts=0.2)
    base.update(kw)
    return events.Purchase(**base)


def test_json_and_msgpack_round_trip_every_type():
    ts = datetime(2017, 3, 1, 12, tzinfo=UTC)
    samples = [
        _purchase(),
        events.AddToCart(event_id="a", ts=ts, customer_id=1, product_id=5),
        events.RemoveFromCart(event_id="r", ts=ts, customer_id=1, product_id=5),
        events.ProductView(event_id="v", ts=ts, customer_id=1, product_id=5),
        events.Inventory(event_id="i", ts=ts, store_id=3, product_id=5, on_hand=0),
        events.CouponRedemption(event_id="c", ts=ts, customer_id=1, coupon_upc=10000085207, campaign_id=26),
        events.SubstitutionFeedback(event_id="s", ts=ts, customer_id=1, store_id=3, original_product_id=5,
                                    substitute_product_id=6, accepted=True),
        events.Impression(event_id="im", ts=ts, customer_id=1, decision_id="d1", product_id=5),
        events.Click(event_id="cl", ts=ts, customer_id=1, decision_id="d1", product_id=5),
    ]
    assert {type(s) for s in samples} == set(events.EVENT_TYPES)
    for event in samples:
        assert events.decode_json(events.encode_json(event)) == event
        assert events.decode_msgpack(events.encode_msgpack(event)) == event


def test_json_carries_the_type_tag():
    raw = msgspec.json.decode(events.encode_json(_purchase()))
    assert raw["type"] == "purchase"
    assert raw["ts"] == "2017-03-01T12:00:00Z"


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b'{"type": "teleport", "event_id": "x", "ts": "2017-01-01T00:00:00Z"}', "teleport"),
        (b'{"type": "product_view", "event_id": "x", "ts": "2017-01-01T00:00:00Z"}', "product_id"),
        (b'{"type": "product_view", "event_id": "x", "ts": "yesterday", "product_id": 1}', "ts"),
        (b'{"type": "inventory", "event_id": "x", "ts": "2017-01-01T00:00:00Z", "store_id": 1,'
         b' "product_id": 2, "on_hand": -1}', "on_hand"),
        (b'{"type": "product_view", "event_id": "x", "ts": "2017-01-01T00:00:00", "product_id": 1}', "timezone"),
        (b'{"type": "product_view", "event_id": "x", "ts": "2017-01-01T00:00:00Z", "product_id": 1, "z": 1}', "z"),
        (b'{"type": "product_view",', "malformed"),
    ],
)
def test_bad_events_are_rejected_with_a_reason(raw, fragment):
    with pytest.raises(events.InvalidEvent, match=fragment):
        events.decode_json(raw)
