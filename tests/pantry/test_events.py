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


# ---- bounds: every field, and the poison pills that used to crash the flow ---------------------------------------


def _raw_purchase(**kw) -> dict:
    base = {"type": "purchase", "event_id": "p1", "ts": "2017-03-01T12:00:00Z", "customer_id": 7, "store_id": 3,
            "basket_id": 11, "product_id": 99, "quantity": 2, "sales_value": 3.5, "discounts": 0.2}
    base.update(kw)
    return base


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ts", "2100-01-01T00:00:00Z"),  # moved the event clock for good
        ("ts", "2300-01-01T00:00:00Z"),  # 2.0 ** ... overflowed in the repertoire decay
        ("ts", "1999-12-31T23:59:59Z"),
        ("sales_value", 1e308),  # reached round(inf)
        ("sales_value", float("inf")),
        ("sales_value", float("nan")),
        ("sales_value", -0.01),
        ("sales_value", events.MAX_MONEY + 1),
        ("discounts", -1.0),
        ("discounts", float("nan")),
        ("customer_id", 2**63),  # struct 'q' / array("q")
        ("customer_id", 2**64 - 1),
        ("customer_id", -1),
        ("basket_id", 2**63),
        ("store_id", 2**31),  # overflowed the old pair key
        ("store_id", events.MAX_STORE_ID + 1),
        ("product_id", events.MAX_PRODUCT_ID + 1),
        ("product_id", 2**63),
        ("quantity", events.MAX_QUANTITY + 1),
        ("event_id", "x" * 129),
        ("event_id", ""),
    ],
)
def test_each_bound_rejects_with_the_field_named(field, value):
    raw = _raw_purchase(**{field: value})
    with pytest.raises(events.InvalidEvent, match=field):
        events.from_builtins(raw)
    with pytest.raises(events.InvalidEvent, match=field):  # the same over msgpack (a raw XADD)
        events.decode_msgpack(msgspec.msgpack.encode(raw))


def test_other_types_have_bounds_too():
    ts = "2017-03-01T12:00:00Z"
    bad = [
        ({"type": "inventory", "event_id": "i", "ts": ts, "store_id": 3, "product_id": 5, "on_hand": 10**12},
         "on_hand"),
        ({"type": "add_to_cart", "event_id": "a", "ts": ts, "product_id": 5, "quantity": 10**7}, "quantity"),
        ({"type": "impression", "event_id": "m", "ts": ts, "customer_id": 1, "decision_id": "d" * 129}, "decision_id"),
        ({"type": "click", "event_id": "c", "ts": ts, "customer_id": 1, "decision_id": ""}, "decision_id"),
        ({"type": "coupon_redemption", "event_id": "c", "ts": ts, "coupon_upc": 2**63, "campaign_id": 1},
         "coupon_upc"),
        ({"type": "substitution_feedback", "event_id": "s", "ts": ts, "original_product_id": 2**50,
          "substitute_product_id": 1, "accepted": True}, "original_product_id"),
    ]
    for raw, field in bad:
        with pytest.raises(events.InvalidEvent, match=field):
            events.from_builtins(raw)


def test_bounds_hold_the_real_data_and_the_edges():
    # the data set's largest ids and values (Complete Journey) and the bounds themselves are accepted
    events.from_builtins(_raw_purchase(store_id=34_280, product_id=18_122_531, basket_id=41_481_282_915,
                                       customer_id=2_500, quantity=89_638, sales_value=840.0, discounts=130.02))
    events.from_builtins(_raw_purchase(store_id=events.MAX_STORE_ID, product_id=events.MAX_PRODUCT_ID,
                                       customer_id=events.MAX_ID, quantity=0, sales_value=events.MAX_MONEY,
                                       ts="2099-12-31T23:59:59+00:00"))
    events.from_builtins(_raw_purchase(ts="2000-01-01T00:00:00Z"))


def test_the_pair_key_holds_every_pair_without_collision():
    from streaming.features.store_product import pair_ids, pair_key

    top = pair_key(events.MAX_STORE_ID, events.MAX_PRODUCT_ID)
    assert top < 2**63  # int64: array("q"), msgpack, Feast's key
    # under the old store << 32 layout these two collided: (1 << 32) | 2**32 + 5 == (2 << 32) | 5
    assert pair_key(1, 2**32 + 5) != pair_key(2, 5)
    for sid, pid in ((0, 0), (1, 2**32 + 5), (2, 5), (events.MAX_STORE_ID, events.MAX_PRODUCT_ID), (34_280, 1)):
        assert pair_ids(pair_key(sid, pid)) == (sid, pid)


def test_max_accepted_ts_rule():
    from pantry.clock import max_accepted_ts

    wall, day = 1_800_000_000.0, 86_400.0
    assert max_accepted_ts("wall", wall, None, 300, day) == wall + 300
    assert max_accepted_ts("wall", wall, wall - 10 * day, 300, day) == wall + 300  # the watermark is not the clock
    wm = 1_500_000_000.0  # a 2017 replay
    assert max_accepted_ts("event", wall, wm, 300, day) == wm + day
    assert max_accepted_ts("event", wall, None, 300, day) == wall + 300  # no watermark yet: the first event
    assert max_accepted_ts("event", wall, wall, 300, day) == wall + 300  # never past the wall clock either
