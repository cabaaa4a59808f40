"""The offline feature log: tuple and dict rows give the same columns, every row lands once in its event day."""

from __future__ import annotations

from datetime import UTC, datetime

from pantry.featurestore.layout import FeatureSchema, ViewSchema
from pantry.featurestore.offline_log import arrow_schema
from streaming.feature_log import FeatureLog, _columns
from streaming.features.store_product import STORE_PRODUCT_FEATURES

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


def test_log_columns_of_tuple_rows_equal_those_of_dict_rows():
    import pyarrow as pa


    tuple_rows = [("store_product", jv, v, t) for jv, v, t in TUPLE_ROWS]
    dict_rows = [("store_product", jv, dict(zip(STORE_PRODUCT_FEATURES, v, strict=True)), t) for jv, v, t in TUPLE_ROWS]
    schema = arrow_schema(STORE_PRODUCT)
    a = pa.Table.from_pydict(_columns(STORE_PRODUCT, tuple_rows, STORE_PRODUCT_FEATURES), schema=schema)
    b = pa.Table.from_pydict(_columns(STORE_PRODUCT, dict_rows, STORE_PRODUCT_FEATURES), schema=schema)
    assert a.equals(b)
    micros = [None if r[1][2] is None else int(r[1][2] * 1e6) for r in TUPLE_ROWS]
    assert a.column("last_sold_at").cast(pa.int64()).to_pylist() == micros
    assert a.column("event_timestamp").cast(pa.int64()).to_pylist() == [int(r[2] * 1e6) for r in TUPLE_ROWS]
    assert a.column("product_id").to_pylist() == [r[0][1] for r in TUPLE_ROWS]


def test_feature_log_writes_every_row_by_event_day_across_hand_offs(tmp_path):
    """Rows handed to the writer thread in several pieces (each converted to Arrow at once) and written in two
    rounds land in their event day's partition, each row once."""
    import pyarrow.parquet as pq

    other = ViewSchema("customer_activity", ("customer_id",), 0.0, (FeatureSchema("orders_7d", "INT64"),))
    log = FeatureLog(tmp_path, {"store_product": STORE_PRODUCT, "customer_activity": other}, worker=0,
                     handoff_s=0.0, tuple_orders={"store_product": STORE_PRODUCT_FEATURES})  # every append: hand-off
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
