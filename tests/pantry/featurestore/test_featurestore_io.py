"""What pantry writes in Feast's Redis layout (pipelined), the plain Feast SDK reads back, and pantry decodes."""

from datetime import UTC, datetime

import pytest
import redis

from pantry.featurestore import repo
from pantry.featurestore.pipeline import write_rows
from pantry.redis_server import sync_client


def test_feast_sdk_reads_rows_written_in_our_layout(feast_applied):
    settings = feast_applied
    layout = repo.layout(settings)
    ts = datetime(2017, 6, 1, 10, 30, tzinfo=UTC)
    write_rows(sync_client(settings), layout, "store_product", [
        ((367, 1082185), {"units_7d": 12, "units_28d": 40, "last_sold_at": ts, "on_hand": 0,
                          "in_stock_prob": 0.25, "on_display": True, "in_mailer": False}, ts),
    ])
    write_rows(sync_client(settings), layout, "customer_repertoire", [
        ((1234,), {"repertoire_product_ids": [5, 6, 7], "repertoire_scores": [3.0, 2.5, 0.5]}, ts),
    ])
    fs = repo.store(settings)
    got = fs.get_online_features(
        features=["store_product:units_7d", "store_product:last_sold_at", "store_product:on_hand",
                  "store_product:in_stock_prob", "store_product:on_display"],
        entity_rows=[{"store_id": 367, "product_id": 1082185}],
    ).to_dict()
    assert got["units_7d"] == [12]
    assert got["on_hand"] == [0]
    assert abs(got["in_stock_prob"][0] - 0.25) < 1e-6
    assert got["on_display"] == [True]
    assert got["last_sold_at"][0] == ts
    rep = fs.get_online_features(
        features=["customer_repertoire:repertoire_product_ids", "customer_repertoire:repertoire_scores"],
        entity_rows=[{"customer_id": 1234}],
    ).to_dict()
    assert rep["repertoire_product_ids"] == [[5, 6, 7]]
    assert rep["repertoire_scores"] == [[3.0, 2.5, 0.5]]


def test_layout_decodes_what_it_encodes(feast_applied):
    layout = repo.layout(feast_applied)
    ts = datetime(2017, 6, 1, tzinfo=UTC)
    client = sync_client(feast_applied)
    write_rows(client, layout, "customer_activity", [
        ((42,), {"orders_7d": 2, "orders_28d": 5, "spend_7d": 10.5, "spend_28d": 30.0,
                 "last_order_at": ts, "preferred_store_id": 367}, ts),
    ])
    raw = client.hmget(layout.key("customer_activity", (42,)), layout.fields("customer_activity"))
    values, got_ts = layout.decode_row("customer_activity", raw)
    assert got_ts == ts
    assert values == {"orders_7d": 2, "orders_28d": 5, "spend_7d": 10.5, "spend_28d": 30.0,
                      "last_order_at": ts, "preferred_store_id": 367}
    missing = client.hmget(layout.key("customer_activity", (999999,)), layout.fields("customer_activity"))
    assert layout.decode_row("customer_activity", missing) == (None, None)


def test_batch_views_are_online(feast_applied):
    fs = repo.store(feast_applied)
    got = fs.get_online_features(
        features=["product:product_type", "product:brand", "campaign_coupon:campaign_ids"],
        entity_rows=[{"product_id": 26093, "coupon_upc": 10000085207}],
    ).to_dict()
    assert got["product_type"] == ["BREAD:ITALIAN/FRENCH"]
    assert got["brand"] == ["Private"]
    assert got["campaign_ids"] == [[26]]


def test_decoded_cache_hands_out_equal_values_and_fresh_lists():
    from pantry.featurestore.values import DecodedCache, decode_timestamp, decode_value, encode_value, timestamp

    cache = DecodedCache(max_entries=3)
    ids = encode_value("INT64_LIST", [5, 6, 7])
    first = cache.value(ids)
    first.append(99)  # a caller mutating its row must not change what the next read gets
    assert cache.value(ids) == [5, 6, 7] == decode_value(ids)
    for dtype, value in [("INT64", 12), ("DOUBLE", 0.25), ("STRING", "x"), ("BOOL", True)]:
        raw = encode_value(dtype, value)
        assert cache.value(raw) == decode_value(raw) == value
    assert len(cache._values) <= 3  # bounded: emptied when full
    assert cache.value(None) is None and cache.value(b"") is None
    ts = timestamp(datetime(2017, 6, 1, 10, 30, 5, 250000, tzinfo=UTC))
    assert cache.ts(ts) == cache.ts(ts) == decode_timestamp(ts)


def test_pipelined_chunks_overlap_and_an_error_in_any_chunk_raises(settings, redis_server):
    from pantry.featurestore.pipeline import PipelineWriter
    from pantry.featurestore.resp import resp_command

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
    writer.send([resp_command([b"HSET", keys[0], b"more", b"x"])] * 3000)  # more replies than one recv holds
    assert client.hget(keys[0], b"more") == b"x"
    writer.close()
    client.delete(b"pantry:test:chunks:str", *keys)
