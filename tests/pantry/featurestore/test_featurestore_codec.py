"""pantry's Feast encodings are byte for byte what Feast's own code produces: entity keys
(feast.infra.key_encoding_utils), values and timestamps (Feast's protobuf classes), and RESP commands (redis-py)."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
import redis
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import DoubleList, FloatList, Int64List, StringList
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from google.protobuf.timestamp_pb2 import Timestamp

from pantry.featurestore.layout import EntityKeys, FeatureSchema, OnlineLayout, ViewSchema, feature_field, ts_field
from pantry.featurestore.resp import RowEncoder, bulk, resp_command, value_encoder
from pantry.featurestore.values import encode_value, timestamp

# ---- Feast's own encodings: the oracle ------------------------------------------------------------------------


def feast_key(project: str, join_keys: tuple[str, ...], values: tuple[int, ...]) -> bytes:
    proto = EntityKeyProto(join_keys=list(join_keys))
    for v in values:
        proto.entity_values.add(int64_val=int(v))
    return serialize_entity_key(proto, entity_key_serialization_version=3) + project.encode()


def feast_value(dtype: str, value) -> bytes:
    if value is None:
        return b""
    proto = {
        "INT64": lambda v: ValueProto(int64_val=int(v)),
        "DOUBLE": lambda v: ValueProto(double_val=float(v)),
        "FLOAT": lambda v: ValueProto(float_val=float(v)),
        "STRING": lambda v: ValueProto(string_val=str(v)),
        "BOOL": lambda v: ValueProto(bool_val=bool(v)),
        "UNIX_TIMESTAMP": lambda v: ValueProto(
            unix_timestamp_val=int(v.timestamp()) if isinstance(v, datetime) else int(v)),
        "INT64_LIST": lambda v: ValueProto(int64_list_val=Int64List(val=[int(x) for x in v])),
        "FLOAT_LIST": lambda v: ValueProto(float_list_val=FloatList(val=[float(x) for x in v])),
        "DOUBLE_LIST": lambda v: ValueProto(double_list_val=DoubleList(val=[float(x) for x in v])),
        "STRING_LIST": lambda v: ValueProto(string_list_val=StringList(val=[str(x) for x in v])),
    }[dtype](value)
    return proto.SerializeToString()


def feast_ts(t: float) -> bytes:
    seconds = int(t // 1)
    return Timestamp(seconds=seconds, nanos=round((t - seconds) * 1e6) * 1000).SerializeToString()


def feast_hset(layout: OnlineLayout, view: str, join_values, values: dict, t: float) -> list[bytes]:
    """HSET's arguments for a row, built from Feast's encodings (in the view's feature order)."""
    schema = layout.views[view]
    args = [b"HSET", feast_key(layout.project, schema.join_keys, join_values)]
    for f in schema.features:
        if f.name in values:
            args += [feature_field(view, f.name), feast_value(f.dtype, values[f.name])]
    return [*args, ts_field(view), feast_ts(t)]


VIEW = ViewSchema("store_product", ("store_id", "product_id"), 0.0, (
    FeatureSchema("units_7d", "INT64"), FeatureSchema("last_sold_at", "UNIX_TIMESTAMP"),
    FeatureSchema("on_hand", "INT64"), FeatureSchema("in_stock_prob", "FLOAT"),
    FeatureSchema("ids", "INT64_LIST"), FeatureSchema("scores", "FLOAT_LIST"), FeatureSchema("brand", "STRING"),
))
STORE_PRODUCT = ViewSchema("store_product", ("store_id", "product_id"), 0.0, (
    FeatureSchema("units_7d", "INT64"), FeatureSchema("units_28d", "INT64"),
    FeatureSchema("last_sold_at", "UNIX_TIMESTAMP"), FeatureSchema("on_hand", "INT64"),
    FeatureSchema("in_stock_prob", "FLOAT"), FeatureSchema("on_display", "BOOL"), FeatureSchema("in_mailer", "BOOL"),
))
STORE_PRODUCT_FEATURES = ("units_7d", "units_28d", "last_sold_at", "on_hand", "in_stock_prob", "on_display",
                          "in_mailer")  # the order the stream's rows come in
TUPLE_ROWS = [
    ((367, 42), (3, 5, 1_500_000_000.0, None, 0.5, None, None), 1_500_000_123.0),
    ((1, 2**40), (2**40, 0, None, 7, 1.0, True, False), 0.25),
    ((0, 0), (-1, 4096, 1_483_228_800.000001, 0, 1e-9, None, None), 1_483_228_800.000001),
]


# ---- keys, values, timestamps ----------------------------------------------------------------------------------


def test_entity_keys_match_feast():
    keys = EntityKeys("pantry", ("store_id", "product_id"))
    for values in [(0, 0), (367, 1_004_906), (2**40, 7), (1, 2**62), (-5, 3)]:
        assert keys(values) == feast_key("pantry", ("store_id", "product_id"), values)
        assert len(keys(values)) == keys.length
    single = EntityKeys("proj", ("customer_id",))
    assert single((1234,)) == feast_key("proj", ("customer_id",), (1234,))
    three = EntityKeys("p", ("c", "a", "b"))  # Feast sorts the join keys by name
    assert three((1, 2, 3)) == feast_key("p", ("c", "a", "b"), (1, 2, 3))


def test_values_match_protobuf():
    for n in [0, 1, 4095, 4096, 2**28 - 1, 2**28, 1_500_000_000, 2**35 - 1, 2**35, 2**40, -5, -(2**63)]:
        assert encode_value("INT64", n) == feast_value("INT64", n), n
    for x in [0.0, 1.5, -2.25, 1e-9, 123456.789]:
        assert encode_value("DOUBLE", x) == feast_value("DOUBLE", x)
        assert encode_value("FLOAT", x) == feast_value("FLOAT", x)
    assert encode_value("FLOAT", 1e300) == feast_value("FLOAT", 1e300)  # overflow: inf, as protobuf casts
    for t in [0, 1_500_000_000, 1_500_000_000.7, datetime(2017, 6, 1, tzinfo=UTC)]:
        assert encode_value("UNIX_TIMESTAMP", t) == feast_value("UNIX_TIMESTAMP", t)
    for dtype, value in [("STRING", "x"), ("BOOL", True), ("BOOL", False), ("STRING_LIST", ["a", "b"]),
                         ("INT64", None)]:
        assert encode_value(dtype, value) == feast_value(dtype, value)


def test_timestamps_match_protobuf():
    for t in [0.0, 1.0, 1_500_000_000.0, 1_500_000_000.25, 1_483_228_800.000001]:
        assert timestamp(t) == feast_ts(t), t
    proto = Timestamp()
    proto.FromDatetime(datetime(2017, 6, 1, 10, 30, 5, 250001, tzinfo=UTC))
    assert timestamp(datetime(2017, 6, 1, 10, 30, 5, 250001, tzinfo=UTC)) == proto.SerializeToString()


def test_list_encoders_match_protobuf():
    rng = random.Random(3)
    for n in [0, 1, 2, 50, 200]:
        ints = [rng.choice([0, 1, 127, 128, 2**40, -1, -(2**63), rng.randrange(10**7)]) for _ in range(n)]
        floats = [rng.choice([0.0, -0.5, 1e-40, 3.4e38, rng.random() * 100]) for _ in range(n)]
        for dtype, values in [("INT64_LIST", ints), ("DOUBLE_LIST", floats), ("FLOAT_LIST", floats)]:
            assert value_encoder(dtype)(values) == bulk(feast_value(dtype, values)), (dtype, n)
    assert value_encoder("FLOAT_LIST")([1e300]) == bulk(feast_value("FLOAT_LIST", [1e300]))  # overflow: inf


# ---- RESP ----------------------------------------------------------------------------------------------------


def test_resp_commands_match_redis_py():
    args = [b"HSET", b"pantry:test:resp", b"f\x00\r\n", b"", b"g", bytes(range(256))]
    assert resp_command(args) == b"".join(redis.connection.Connection().pack_command(*args))


def test_hset_commands_are_feasts_encodings_as_redis_py_sends_them():
    layout = OnlineLayout("pantry", {"store_product": VIEW})
    enc = RowEncoder(layout)
    rows = [
        ((367, 42), {"units_7d": 3, "last_sold_at": 1_500_000_000.0, "on_hand": None, "in_stock_prob": 0.5,
                     "ids": [3, 1], "scores": [0.5, 0.25], "brand": "Private"}, 1_500_000_123.0),
        ((1, 2**40), {"units_7d": 2**40, "on_hand": -1, "in_stock_prob": 1.0, "ids": [], "scores": []}, 0.25),
    ]
    for join_values, values, t in rows:
        args = feast_hset(layout, "store_product", join_values, values, t)
        command = enc.hset_command("store_product", join_values, values, t)
        assert command == b"".join(redis.connection.Connection().pack_command(*args))
        assert enc.key("store_product", join_values) == layout.key("store_product", join_values) == args[1]


def test_tuple_rows_are_the_same_hset_as_dict_rows_in_any_view_order():
    shuffled = ViewSchema("store_product", ("store_id", "product_id"), 0.0, tuple(reversed(STORE_PRODUCT.features)))
    for view in (STORE_PRODUCT, shuffled):
        layout = OnlineLayout("pantry", {"store_product": view})
        enc = RowEncoder(layout, {"store_product": STORE_PRODUCT_FEATURES})
        for join_values, values, t in TUPLE_ROWS:
            as_dict = dict(zip(STORE_PRODUCT_FEATURES, values, strict=True))
            command = enc.hset_command("store_product", join_values, values, t)
            assert command == enc.hset_command("store_product", join_values, as_dict, t)
            args = feast_hset(layout, "store_product", join_values, as_dict, t)
            assert command == b"".join(redis.connection.Connection().pack_command(*args))


def test_a_tuple_order_that_is_not_the_views_features_is_refused():
    layout = OnlineLayout("pantry", {"store_product": VIEW})
    with pytest.raises(ValueError, match="does not name the view's features"):
        RowEncoder(layout, {"store_product": STORE_PRODUCT_FEATURES})
