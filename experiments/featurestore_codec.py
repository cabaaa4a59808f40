"""Question: is pantry's hand-written Feast codec (pantry/featurestore/resp.py) worth keeping over Feast's protobuf
classes plus redis-py's command packing?

Command: `.venv/bin/python -m experiments.featurestore_codec` (no Redis needed; ~30 s).
It encodes the same rows both ways (and checks the bytes are equal): store_product rows as the stream emits them
(~87 % of the online rows of a full-year replay) and customer_repertoire rows (two lists of 50 values).
Result: see docs/DECISIONS.md, "A hand-written Feast codec".
"""

from __future__ import annotations

import random
import time

import redis
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import FloatList, Int64List, Value
from google.protobuf.timestamp_pb2 import Timestamp

from pantry.featurestore.layout import FeatureSchema, OnlineLayout, ViewSchema, feature_field, ts_field
from pantry.featurestore.resp import RowEncoder

N = 100_000
STORE_PRODUCT = ViewSchema("store_product", ("store_id", "product_id"), 0.0, tuple(FeatureSchema(n, d) for n, d in [
    ("units_7d", "INT64"), ("units_28d", "INT64"), ("last_sold_at", "UNIX_TIMESTAMP"), ("on_hand", "INT64"),
    ("in_stock_prob", "FLOAT"), ("on_display", "BOOL"), ("in_mailer", "BOOL")]))
REPERTOIRE = ViewSchema("customer_repertoire", ("customer_id",), 0.0, (
    FeatureSchema("repertoire_product_ids", "INT64_LIST"), FeatureSchema("repertoire_scores", "FLOAT_LIST")))
LAYOUT = OnlineLayout("pantry", {"store_product": STORE_PRODUCT, "customer_repertoire": REPERTOIRE})
ORDER = tuple(f.name for f in STORE_PRODUCT.features)


def with_protobuf(rows) -> list[bytes]:
    pack = redis.connection.Connection().pack_command
    out = []
    for view, join_values, values, t in rows:
        schema = LAYOUT.views[view]
        key = EntityKey(join_keys=list(schema.join_keys))
        for v in join_values:
            key.entity_values.add(int64_val=v)
        args = [b"HSET", serialize_entity_key(key, entity_key_serialization_version=3) + b"pantry"]
        if values.__class__ is tuple:
            values = dict(zip(ORDER, values, strict=True))
        for f in schema.features:
            v = values[f.name]
            proto = b"" if v is None else {
                "INT64": lambda v: Value(int64_val=v), "FLOAT": lambda v: Value(float_val=v),
                "UNIX_TIMESTAMP": lambda v: Value(unix_timestamp_val=int(v)), "BOOL": lambda v: Value(bool_val=v),
                "INT64_LIST": lambda v: Value(int64_list_val=Int64List(val=v)),
                "FLOAT_LIST": lambda v: Value(float_list_val=FloatList(val=v)),
            }[f.dtype](v).SerializeToString()
            args += [feature_field(view, f.name), proto]
        seconds = int(t)
        ts = Timestamp(seconds=seconds, nanos=round((t - seconds) * 1e6) * 1000).SerializeToString()
        out.append(b"".join(pack(*args, ts_field(view), ts)))
    return out


def main() -> None:
    rng = random.Random(7)
    store_rows = [("store_product", (rng.randrange(1, 500), rng.randrange(10**5, 10**6)),
                   (rng.randrange(30), rng.randrange(100), 1.5e9 + rng.randrange(10**7), None, rng.random(), None,
                    None), 1.5e9 + rng.randrange(10**7)) for _ in range(N)]
    products = [rng.randrange(10**5, 10**6) for _ in range(3000)]
    rep_rows = [("customer_repertoire", (rng.randrange(1, 2500),),
                 {"repertoire_product_ids": rng.sample(products, 50),
                  "repertoire_scores": [rng.random() for _ in range(50)]}, 1.5e9 + rng.randrange(10**7))
                for _ in range(N // 5)]
    encoder = RowEncoder(LAYOUT, {"store_product": ORDER})
    for name, rows in (("store_product", store_rows), ("customer_repertoire", rep_rows)):
        assert encoder.commands(rows[:2000]) == with_protobuf(rows[:2000])
        for way, encode in (("Feast protobuf + redis-py", with_protobuf), ("pantry RowEncoder", encoder.commands)):
            best = min(_timed(encode, rows) for _ in range(3))
            print(f"{name:20} {way:26} {best / len(rows) * 1e6:6.2f} us/row")


def _timed(encode, rows) -> float:
    start = time.perf_counter()
    encode(rows)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
