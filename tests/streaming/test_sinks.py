"""The sink's hand-built Feast encodings are byte-for-byte what Feast itself produces."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from pantry.online import FeatureSchema, OnlineLayout, ViewSchema, entity_key
from streaming.sinks import EntityKeys, RowEncoder, _ts_bytes

VIEW = ViewSchema("store_product", ("store_id", "product_id"), 0.0, (
    FeatureSchema("units_7d", "INT64"), FeatureSchema("last_sold_at", "UNIX_TIMESTAMP"),
    FeatureSchema("on_hand", "INT64"), FeatureSchema("in_stock_prob", "FLOAT"),
    FeatureSchema("ids", "INT64_LIST"), FeatureSchema("scores", "FLOAT_LIST"),
))


def test_entity_keys_match_feast_serialization():
    keys = EntityKeys("pantry", ("store_id", "product_id"))
    for values in [(0, 0), (367, 1_004_906), (2**40, 7), (1, 2**62)]:
        assert keys(values) == entity_key("pantry", ("store_id", "product_id"), values)
    single = EntityKeys("proj", ("customer_id",))
    assert single((1234,)) == entity_key("proj", ("customer_id",), (1234,))


def test_timestamps_match_protobuf():
    for t in [0.0, 1.0, 1_500_000_000.0, 1_500_000_000.25, 1_483_228_800.000001]:
        seconds = int(t)
        proto = Timestamp(seconds=seconds, nanos=round((t - seconds) * 1e6) * 1000)
        assert _ts_bytes(t) == proto.SerializeToString(), t


def test_row_encoding_matches_the_layout():
    layout = OnlineLayout("pantry", {"store_product": VIEW})
    enc = RowEncoder(layout)
    values = {"units_7d": 3, "last_sold_at": 1_500_000_000.0, "on_hand": None, "in_stock_prob": 0.5,
              "ids": [3, 1], "scores": [0.5, 0.25]}
    t = 1_500_000_123.0
    want = layout.encode_row("store_product", values, datetime.fromtimestamp(t, UTC))
    assert enc.mapping("store_product", values, t) == want
    assert enc.key("store_product", (367, 42)) == layout.key("store_product", (367, 42))


def test_scalar_encoders_match_protobuf():
    from pantry.online import encode_value
    from streaming.sinks import _double, _float, _int64, _unix_ts

    for n in [0, 1, 4095, 4096, 2**28 - 1, 2**28, 1_500_000_000, 2**35 - 1, 2**35, 2**40, -5, -(2**63)]:
        assert _int64(n) == encode_value("INT64", n), n
    for x in [0.0, 1.5, -2.25, 1e-9, 123456.789]:
        assert _double(x) == encode_value("DOUBLE", x)
        assert _float(x) == encode_value("FLOAT", x)
    for t in [0, 1_500_000_000, 1_500_000_000.7]:
        assert _unix_ts(t) == encode_value("UNIX_TIMESTAMP", t)


def test_resp_commands_match_redis_py_and_reach_redis(settings, redis_server):
    import pytest
    import redis

    from pantry.redis_server import sync_client
    from streaming.sinks import resp_command, send_pipelined

    args = [b"HSET", b"pantry:test:resp", b"f\x00\r\n", b"", b"g", bytes(range(256))]
    assert resp_command(args) == b"".join(redis.connection.Connection().pack_command(*args))
    client = sync_client(settings)
    client.delete(b"pantry:test:resp")
    send_pipelined(client, [resp_command(args), resp_command([b"HSET", b"pantry:test:resp", b"h", b"1"])])
    assert client.hgetall(b"pantry:test:resp") == {b"f\x00\r\n": b"", b"g": bytes(range(256)), b"h": b"1"}
    with pytest.raises(redis.ResponseError):  # an error reply (HSET on a string) is not swallowed
        client.set(b"pantry:test:resp:str", b"x")
        send_pipelined(client, [resp_command([b"HSET", b"pantry:test:resp:str", b"a", b"b"])])
    assert client.ping()  # and the pool still works
    client.delete(b"pantry:test:resp", b"pantry:test:resp:str")


def test_hset_command_is_resp_of_the_row_and_redis_py_agrees(settings, redis_server):
    import pytest
    import redis

    from pantry.redis_server import sync_client
    from streaming.sinks import PipelineWriter, resp_command

    layout = OnlineLayout("pantry", {"store_product": VIEW})
    enc = RowEncoder(layout)
    rows = [
        ((367, 42), {"units_7d": 3, "last_sold_at": 1_500_000_000.0, "on_hand": None, "in_stock_prob": 0.5,
                     "ids": [3, 1], "scores": [0.5, 0.25]}, 1_500_000_123.0),
        ((1, 2**40), {"units_7d": 2**40, "on_hand": -1, "in_stock_prob": 1.0, "ids": [], "scores": []}, 0.25),
    ]
    for join_values, values, t in rows:
        args = [b"HSET", enc.key("store_product", join_values), *enc.hset_args("store_product", values, t)]
        command = enc.hset_command("store_product", join_values, values, t)
        assert command == resp_command(args) == b"".join(redis.connection.Connection().pack_command(*args))
    client = sync_client(settings)
    writer = PipelineWriter(client)
    writer.send([enc.hset_command("store_product", jv, v, t) for jv, v, t in rows] * 1500)  # > one recv of replies
    for join_values, values, t in rows:
        assert client.hgetall(enc.key("store_product", join_values)) == enc.mapping("store_product", values, t)
    client.set(b"pantry:test:resp:str", b"x")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):  # an error reply among good ones is not swallowed
        writer.send([enc.hset_command("store_product", *rows[0]),
                     resp_command([b"HSET", b"pantry:test:resp:str", b"a", b"b"])])
    writer.send([enc.hset_command("store_product", *rows[1])])  # and the writer still works
    writer.close()
    client.delete(b"pantry:test:resp:str", *(enc.key("store_product", jv) for jv, _, _ in rows))


def test_list_encoders_match_protobuf():
    import random

    from pantry.online import encode_value
    from streaming.sinks import _bulk, _resp_double_list, _resp_float_list, _resp_int64_list

    rng = random.Random(3)
    for n in [0, 1, 2, 50, 200]:
        ints = [rng.choice([0, 1, 127, 128, 2**40, -1, -(2**63), rng.randrange(10**7)]) for _ in range(n)]
        floats = [rng.choice([0.0, -0.5, 1e-40, 3.4e38, rng.random() * 100]) for _ in range(n)]
        assert _resp_int64_list(ints) == _bulk(encode_value("INT64_LIST", ints))
        assert _resp_double_list(floats) == _bulk(encode_value("DOUBLE_LIST", floats))
        assert _resp_float_list(floats) == _bulk(encode_value("FLOAT_LIST", floats))
    assert _resp_float_list([1e300]) == _bulk(encode_value("FLOAT_LIST", [1e300]))  # overflow: as protobuf does


STORE_PRODUCT = ViewSchema("store_product", ("store_id", "product_id"), 0.0, (
    FeatureSchema("units_7d", "INT64"), FeatureSchema("units_28d", "INT64"),
    FeatureSchema("last_sold_at", "UNIX_TIMESTAMP"), FeatureSchema("on_hand", "INT64"),
    FeatureSchema("in_stock_prob", "FLOAT"), FeatureSchema("on_display", "BOOL"), FeatureSchema("in_mailer", "BOOL"),
))
TUPLE_ROWS = [
    ((367, 42), (3, 5, 1_500_000_000.0, None, 0.5, None, None), 1_500_000_123.0),
    ((1, 2**40), (2**40, 0, None, 7, 1.0, True, False), 0.25),
    ((0, 0), (-1, 4096, 1_483_228_800.000001, 0, 1e-9, None, None), 1_483_228_800.000001),
]


def test_tuple_rows_are_the_same_hset_as_dict_rows_in_any_view_order(settings, redis_server):
    from pantry.redis_server import sync_client
    from streaming.features import STORE_PRODUCT_FEATURES
    from streaming.sinks import PipelineWriter

    shuffled = ViewSchema("store_product", ("store_id", "product_id"), 0.0, tuple(reversed(STORE_PRODUCT.features)))
    client = sync_client(settings)
    for view in (STORE_PRODUCT, shuffled):
        enc = RowEncoder(OnlineLayout("pantry", {"store_product": view}))
        command = enc.tuple_commands["store_product"]
        assert command.encode == (command.store_product if view is STORE_PRODUCT else command.generic)
        for join_values, values, t in TUPLE_ROWS:
            as_dict = dict(zip(STORE_PRODUCT_FEATURES, values, strict=True))
            assert enc.hset_command("store_product", join_values, values, t) == enc.hset_command(
                "store_product", join_values, as_dict, t)
        writer = PipelineWriter(client)
        writer.send_chunks([[enc.hset_command("store_product", *row)] for row in TUPLE_ROWS])
        for join_values, values, t in TUPLE_ROWS:
            got = client.hgetall(enc.key("store_product", join_values))
            assert got == enc.mapping("store_product", dict(zip(STORE_PRODUCT_FEATURES, values, strict=True)), t)
            client.delete(enc.key("store_product", join_values))
        writer.close()
    # a layout whose view has other features: tuple rows are written as dicts of the features it has
    enc = RowEncoder(OnlineLayout("pantry", {"store_product": VIEW}))
    assert "store_product" not in enc.tuple_commands
    join_values, values, t = TUPLE_ROWS[0]
    assert enc.hset_command("store_product", join_values, values, t) == enc.hset_command(
        "store_product", join_values, dict(zip(STORE_PRODUCT_FEATURES, values, strict=True)), t)


def test_pipelined_chunks_overlap_and_an_error_in_any_chunk_raises(settings, redis_server):
    import pytest
    import redis

    from pantry.redis_server import sync_client
    from streaming.sinks import PipelineWriter, resp_command

    client = sync_client(settings)
    writer = PipelineWriter(client)
    keys = [b"pantry:test:chunks:%d" % i for i in range(3)]
    chunks = [[resp_command([b"HSET", keys[i % 3], b"f%d" % i, b"v" * (i % 50)]) for i in range(j, j + 997)]
              for j in range(0, 5 * 997, 997)]
    writer.send_chunks(iter(chunks))
    assert sum(client.hlen(k) for k in keys) == 5 * 997
    client.set(b"pantry:test:chunks:str", b"x")
    bad = [resp_command([b"HSET", b"pantry:test:chunks:str", b"a", b"b"])]
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        writer.send_chunks([chunks[0], bad, chunks[1]])
    writer.send_chunks([chunks[2]])  # every reply was read: the connection is still in step
    assert client.hlen(keys[0]) > 0
    writer.close()
    client.delete(b"pantry:test:chunks:str", *keys)


def test_log_columns_of_tuple_rows_equal_those_of_dict_rows():
    import pyarrow as pa

    from streaming.features import STORE_PRODUCT_FEATURES
    from streaming.sinks import _columns, arrow_schema

    tuple_rows = [("store_product", jv, v, t) for jv, v, t in TUPLE_ROWS]
    dict_rows = [("store_product", jv, dict(zip(STORE_PRODUCT_FEATURES, v, strict=True)), t) for jv, v, t in TUPLE_ROWS]
    schema = arrow_schema(STORE_PRODUCT)
    a = pa.Table.from_pydict(_columns(STORE_PRODUCT, tuple_rows), schema=schema)
    b = pa.Table.from_pydict(_columns(STORE_PRODUCT, dict_rows), schema=schema)
    assert a.equals(b)
    micros = [None if r[1][2] is None else int(r[1][2] * 1e6) for r in TUPLE_ROWS]
    assert a.column("last_sold_at").cast(pa.int64()).to_pylist() == micros
    assert a.column("event_timestamp").cast(pa.int64()).to_pylist() == [int(r[2] * 1e6) for r in TUPLE_ROWS]
    assert a.column("product_id").to_pylist() == [r[0][1] for r in TUPLE_ROWS]


def test_feature_log_writes_every_row_by_event_day_across_hand_offs(tmp_path):
    """Rows handed to the writer thread in several pieces (each converted to Arrow at once) and written in two
    rounds land in their event day's partition, each row once."""
    import pyarrow.parquet as pq

    from streaming import sinks

    other = ViewSchema("customer_activity", ("customer_id",), 0.0, (FeatureSchema("orders_7d", "INT64"),))
    log = sinks.FeatureLog(tmp_path, {"store_product": STORE_PRODUCT, "customer_activity": other}, worker=0,
                           handoff_s=0.0)  # every append is a hand-off
    day0, day1 = 1_500_000_000.0 - 1_500_000_000.0 % 86400, 1_500_000_000.0 - 1_500_000_000.0 % 86400 + 86400
    appended = []
    for i in range(6):
        t = (day0 if i % 2 else day1) + i
        rows = [("store_product", (i, 7), (i, 2 * i, None, None, 0.5, None, None), t),
                ("customer_activity", (i,), {"orders_7d": i}, t)]
        log.append(rows)
        appended += rows
        if i == 2:
            log.write()  # a first round of files
    log.close()
    for view in ("store_product", "customer_activity"):
        read = []
        for path in sorted((tmp_path / view).glob("*/part-*.parquet")):
            day = datetime.strptime(path.parent.name, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()
            table = pq.read_table(path)
            seconds = [ts.timestamp() for ts in table.column("event_timestamp").to_pylist()]
            assert all(day <= s < day + 86400 for s in seconds)
            read += list(zip(table.column(STORE_PRODUCT.join_keys[0] if view == "store_product" else "customer_id")
                             .to_pylist(), seconds, strict=True))
        expected = [(r[1][0], r[3]) for r in appended if r[0] == view]
        assert sorted(read) == sorted(expected)
        assert len(list((tmp_path / view).iterdir())) == 2  # two day partitions
