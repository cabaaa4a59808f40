"""The stock Feast SDK pointed at pantry (`online_store: {type: remote, path: <pantry>}`, the key as an OIDC token):
it reads what the SDK reads from Redis itself, and its pushes and writes land online (and in the offline feature
log), as pantry's own reads then see."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import httpx
import pandas as pd
import pyarrow.dataset as ds
import pytest
import yaml

from pantry.featurestore import feast_sdk, repo
from pantry.featurestore.pipeline import write_rows
from pantry.redis_server import sync_client

TOKEN_ENV = "PANTRY_TEST_FEAST_TOKEN"
CUSTOMER, STORE, PRODUCT, COUPON = 990_001, 99_001, 9_900_001, 99_000_001
JOIN_VALUES = {"customer_id": CUSTOMER, "store_id": STORE, "product_id": PRODUCT, "coupon_upc": COUPON}
T0 = datetime(2017, 6, 1, 12, 0, tzinfo=UTC)


def _value(dtype: str, i: int):
    return {"INT64": 7 + i, "INT32": 3 + i, "DOUBLE": 1.5 + i, "FLOAT": 0.25 + i, "STRING": f"s{i}", "BOOL": i % 2 == 0,
            "UNIX_TIMESTAMP": T0 - timedelta(hours=i + 1), "INT64_LIST": [1 + i, 2, 3], "FLOAT_LIST": [0.5, 0.25 + i],
            "DOUBLE_LIST": [0.5, 1.5 + i], "STRING_LIST": ["a", f"b{i}"]}[dtype]


def _plain(value):
    """The SDK's remote client gives UNIX_TIMESTAMP values as epoch seconds, its Redis client as datetimes (Feast's
    own `feast serve` answers the same way): compared as epoch seconds."""
    if isinstance(value, datetime):
        return int(value.timestamp())
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@pytest.fixture(scope="module")
def stores(api, feast_applied, tmp_path_factory, api_keys, layout):
    """(the SDK on pantry's HTTP API, the SDK on Redis directly), with a row written in every view."""
    client = sync_client(feast_applied)
    for view in layout.views.values():
        values = {f.name: _value(f.dtype, i) for i, f in enumerate(view.features)}
        write_rows(client, layout, view.name, [(tuple(JOIN_VALUES[k] for k in view.join_keys), values, T0)])
    os.environ[TOKEN_ENV] = api_keys.data
    remote_dir = tmp_path_factory.mktemp("feast-remote")
    (remote_dir / "feature_store.yaml").write_text(yaml.safe_dump({
        "project": feast_applied.project, "provider": "local", "registry": str(feast_applied.registry_path),
        "online_store": {"type": "remote", "path": api.url},
        "offline_store": {"type": "file"}, "entity_key_serialization_version": 3,
        "auth": {"type": "oidc", "token_env_var": TOKEN_ENV},
    }))
    feast = feast_sdk.import_feast()
    return feast.FeatureStore(repo_path=str(remote_dir)), repo.store(feast_applied)


def _both(stores, features, rows):
    remote, direct = stores
    got = remote.get_online_features(features=features, entity_rows=rows).to_dict()
    want = direct.get_online_features(features=features, entity_rows=rows).to_dict()
    return {k: _plain(v) for k, v in got.items()}, {k: _plain(v) for k, v in want.items()}


def test_the_sdk_reads_every_single_key_view_through_pantry_as_from_redis(stores, layout):
    single = [v for v in layout.views.values() if len(v.join_keys) == 1]
    assert len(single) >= 6
    for view in single:
        key = view.join_keys[0]
        features = [f"{view.name}:{f}" for f in view.feature_names]
        got, want = _both(stores, features, [{key: JOIN_VALUES[key]}, {key: 12_345_678}])  # present, missing
        assert got == want, view.name
        first = view.feature_names[0]
        assert got[first][0] is not None and got[first][1] is None, view.name


def test_the_sdk_reads_the_demo_feature_services_through_pantry(stores):
    remote, _ = stores
    rows = [{"customer_id": CUSTOMER, "store_id": STORE, "product_id": PRODUCT, "coupon_upc": COUPON}]
    for name in ("recommendations_v1", "substitutions_v1", "next_best_action_v1"):
        service = remote.get_feature_service(name)
        got, want = _both(stores, service, rows)
        assert got == want, name
        assert sum(v[0] is not None for v in got.values()) > len(rows[0]), name


def _get(http, features, entities):
    # pantry's Feast route: values past their TTL at the session's event clock come back too
    response = http.post("/get-online-features", json={"features": features, "entities": entities})
    assert response.status_code == 200, response.text
    body = response.json()
    return {name: col["values"] for name, col in zip(body["metadata"]["feature_names"], body["results"], strict=True)}


def _logged(settings, view: str, customer: int) -> pd.DataFrame:
    table = ds.dataset(settings.feature_log_dir / view, format="parquet").to_table()
    frame = table.to_pandas()
    return frame[frame["customer_id"] == customer]


def test_sdk_push_and_write_land_online_and_in_the_feature_log(stores, http, feast_applied, layout):
    remote, direct = stores
    view = layout.views["customer_activity"]
    customer = CUSTOMER + 1
    when = pd.Timestamp(T0 + timedelta(minutes=5))
    row = {f.name: [_value(f.dtype, 3)] for f in view.features}
    remote.push("customer_activity_push", pd.DataFrame({"customer_id": [customer], **row, "event_timestamp": [when]}))
    got = _get(http, ["customer_activity:orders_7d", "customer_activity:spend_28d"], {"customer_id": [customer]})
    assert got["orders_7d"] == [_value("INT64", 3)] and got["spend_28d"] == [_value("DOUBLE", 3)]
    assert len(_logged(feast_applied, "customer_activity", customer)) == 1

    # write_to_online_store: a newer row replaces it; the SDK on Redis sees what pantry sees
    newer = {name: [v[0] + 1 if isinstance(v[0], int | float) and not isinstance(v[0], bool) else v[0]]
             for name, v in row.items()}
    remote.write_to_online_store("customer_activity", pd.DataFrame(
        {"customer_id": [customer], **newer, "event_timestamp": [when + pd.Timedelta(minutes=1)]}))
    got = _get(http, ["customer_activity:orders_7d"], {"customer_id": [customer]})
    assert got["orders_7d"] == [_value("INT64", 3) + 1]
    direct_row = direct.get_online_features(features=["customer_activity:orders_7d"],
                                            entity_rows=[{"customer_id": customer}]).to_dict()
    assert direct_row["orders_7d"] == [_value("INT64", 3) + 1]
    assert len(_logged(feast_applied, "customer_activity", customer)) == 2


def test_feast_http_push_keeps_the_newer_row_and_rejects_what_does_not_fit(api, api_keys, http, feast_applied):
    customer = CUSTOMER + 2
    feast_client = httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {api_keys.features}"})

    def push(orders: int, at: str, **extra):
        df = {"customer_id": [customer], "orders_7d": [orders], "orders_28d": [1], "spend_7d": [1.0],
              "spend_28d": [2.0], "last_order_at": [at], "preferred_store_id": [STORE], "event_timestamp": [at],
              **extra}
        return feast_client.post("/push", json={"push_source_name": "customer_activity_push", "df": df})

    first = push(5, "2017-06-02T10:00:00")
    assert first.status_code == 200, first.text
    assert first.json() == [{"rows": 1, "written_online": 1, "skipped_older": 0, "logged": 1}]
    older = push(9, "2017-06-02T09:00:00")
    assert older.json()[0]["skipped_older"] == 1
    assert _get(http, ["customer_activity:orders_7d"], {"customer_id": [customer]})["orders_7d"] == [5]

    for bad, words in ((push(5, "2017-06-02T11:00:00", colour=["red"]), "colour"),
                       (push("five", "2017-06-02T11:00:00"), "orders_7d[0]"),
                       (push(5, "yesterday"), "not an ISO 8601 time")):
        assert bad.status_code == 400 and words in bad.json()["detail"], bad.text
    unknown = feast_client.post("/push", json={"push_source_name": "nope", "df": {"customer_id": [1]}})
    assert unknown.status_code == 400 and "customer_activity_push" in unknown.json()["detail"]
    assert _get(http, ["customer_activity:orders_7d"], {"customer_id": [customer]})["orders_7d"] == [5]
    assert len(_logged(feast_applied, "customer_activity", customer)) == 2  # the two valid pushes, nothing else

    refused = httpx.post(f"{api.url}/push", headers={"Authorization": f"Bearer {api_keys.ingest}"},
                         json={"push_source_name": "customer_activity_push", "df": {"customer_id": [1]}})
    assert refused.status_code == 403 and "`features` scope" in refused.json()["detail"]
