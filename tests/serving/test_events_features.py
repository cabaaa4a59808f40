"""POST /v1/events (all-or-nothing XADD, per-event errors, limits) and POST /v1/features (Feast's shape + ages)."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta

import httpx

from pantry.events import decode_msgpack
from pantry.keys import EVENT_FIELD, EVENTS_STREAM
from pantry.redis_server import sync_client


def _post_declared_length(http, path: str, length: int) -> bytes:
    """Headers only, announcing `length` bytes: the server must refuse (413) before reading any of it.
    (Sending the whole oversized body races the server closing the connection after its early 413.)"""
    url = httpx.URL(str(http.base_url))
    with socket.create_connection((url.host, url.port), timeout=5) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {url.host}\r\nContent-Type: application/json\r\n"
                     f"X-API-Key: {http.headers['X-API-Key']}\r\nContent-Length: {length}\r\n\r\n".encode())
        return sock.recv(4096)


def _event(i: int, **extra) -> dict:
    return {"type": "add_to_cart", "event_id": f"serving-test-{i}", "ts": "2017-06-01T10:00:00Z",
            "customer_id": 7, "store_id": 3, "product_id": 1000 + i, **extra}


def test_valid_batch_is_in_the_stream_before_202(http, feast_applied):
    client = sync_client(feast_applied)
    before = client.xlen(EVENTS_STREAM)
    events = [_event(i) for i in range(5)]
    response = http.post("/v1/events", json={"events": events})
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 5, "duplicate": False}
    entries = client.xrange(EVENTS_STREAM, count=before + 10)[before:]
    decoded = [decode_msgpack(fields[EVENT_FIELD]) for _, fields in entries]
    assert [e.event_id for e in decoded] == [e["event_id"] for e in events]
    assert decoded[0].product_id == 1000


def test_invalid_events_reject_the_batch_with_indexes(http, feast_applied):
    client = sync_client(feast_applied)
    before = client.xlen(EVENTS_STREAM)
    events = [_event(0), _event(1, product_id="x"), _event(2), {"type": "teleport", "event_id": "t", "ts": "x"},
              _event(4, ts="2017-06-01T10:00:00")]  # no timezone
    response = http.post("/v1/events", json={"events": events})
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert [e["index"] for e in errors] == [1, 3, 4]
    assert "product_id" in errors[0]["reason"] and "timezone" in errors[2]["reason"]
    assert client.xlen(EVENTS_STREAM) == before  # nothing accepted


def test_event_limits(http, feast_applied):
    too_many = [_event(i) for i in range(feast_applied.max_events_per_batch + 1)]
    response = http.post("/v1/events", json={"events": too_many})
    assert response.status_code == 400 and "limit" in response.json()["detail"]
    assert _post_declared_length(http, "/v1/events", feast_applied.max_body_bytes + 10).startswith(b"HTTP/1.1 413")
    assert http.post("/v1/events", json={"evnts": []}).status_code == 400


def test_features_match_feast_shape_with_ages_and_ttl(http, write_features):
    written = datetime(2017, 7, 1, 8, tzinfo=UTC)
    write_features("customer_activity", (9_200_000_001,), {"orders_7d": 3, "spend_7d": 12.5,
                                                           "last_order_at": written}, written)
    write_features("customer_session", (9_200_000_001,), {"session_events": 4}, written)
    body = {
        "features": ["customer_activity:orders_7d", "customer_activity:last_order_at",
                     "customer_session:session_events"],
        "entities": {"customer_id": [9_200_000_001, 9_200_000_002]},
        "full_feature_names": True,
    }
    # Feast's feature server has no `as_of`; our clock is the watermark, so check ages relative to it
    response = http.post("/v1/features", json=body)
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["metadata"]["feature_names"] == [
        "customer_id", "customer_activity__orders_7d", "customer_activity__last_order_at",
        "customer_session__session_events",
    ]
    ids, orders, last, session = out["results"]
    assert ids["values"] == [9_200_000_001, 9_200_000_002] and ids["statuses"] == ["PRESENT", "PRESENT"]
    assert orders["statuses"][1] == "NOT_FOUND" and orders["values"][1] is None
    assert orders["event_timestamps"][0] == "2017-07-01T08:00:00Z"
    assert last["values"][0] in (None, int(written.timestamp()))
    ages = orders["ages_s"][0]
    assert ages is not None
    # 90-day TTL for activity vs 1-hour TTL for session: same write time, the session goes stale first
    if ages > 3600:
        assert session["statuses"][0] == "OUTSIDE_MAX_AGE" and session["values"][0] is None
    if ages <= 90 * 86400:
        assert orders["statuses"][0] == "PRESENT" and orders["values"][0] == 3


def test_features_by_service_and_bad_requests(http):
    ok = http.post("/v1/features", json={"feature_service": "next_best_action_v1",
                                         "entities": {"customer_id": [1], "coupon_upc": [10000085207]}})
    assert ok.status_code == 200, ok.text
    names = ok.json()["metadata"]["feature_names"]
    assert names[:2] == ["customer_id", "coupon_upc"] and "orders_7d" in names and "campaign_ids" in names
    for body, words in (
        ({"feature_service": "nope", "entities": {"customer_id": [1]}}, "unknown feature service"),
        ({"features": ["customer_activity:nope"], "entities": {"customer_id": [1]}}, "no feature"),
        ({"features": ["store_product:on_hand"], "entities": {"store_id": [1]}}, "product_id"),
        ({"features": ["customer_activity:orders_7d"], "entities": {"customer_id": [1], "store_id": [1, 2]}},
         "same number"),
        ({"entities": {"customer_id": [1]}}, "feature_service"),
    ):
        response = http.post("/v1/features", json=body)
        assert response.status_code == 400, (body, response.text)
        assert words in response.json()["detail"], response.text


def test_features_ttl_with_old_watermark(http, write_features, feast_applied):
    """With the event clock at a known watermark, ages and staleness are exact."""
    from pantry.clock import publish_watermark

    client = sync_client(feast_applied)
    if client.get("pantry:watermark") is None:
        publish_watermark(client, datetime(2017, 7, 1, 12, tzinfo=UTC))
    from pantry.clock import read_watermark

    now = read_watermark(client)
    write_features("customer_session", (9_200_000_010,), {"session_events": 1}, now - timedelta(hours=2))
    write_features("customer_session", (9_200_000_011,), {"session_events": 2}, now - timedelta(minutes=2))
    out = http.post("/v1/features", json={"features": ["customer_session:session_events"],
                                          "entities": {"customer_id": [9_200_000_010, 9_200_000_011]}}).json()
    col = out["results"][1]
    assert col["statuses"] == ["OUTSIDE_MAX_AGE", "PRESENT"]
    assert col["values"] == [None, 2]
    assert abs(col["ages_s"][0] - 7200) < 5 and abs(col["ages_s"][1] - 120) < 5


def test_features_json_values_per_type_like_feast(http, write_features, feast_applied):
    """Timestamps as epoch seconds, non-finite floats as Feast JSON strings, finite lists untouched, nulls as nulls."""
    from pantry.clock import publish_watermark, read_watermark

    client = sync_client(feast_applied)
    if client.get("pantry:watermark") is None:
        publish_watermark(client, datetime(2017, 7, 1, 12, tzinfo=UTC))
    now = read_watermark(client)
    last = now - timedelta(days=1, microseconds=0)
    write_features("customer_activity", (9_200_000_020,), {"spend_7d": float("inf"), "spend_28d": float("nan"),
                                                           "orders_7d": 2, "last_order_at": last}, now)
    write_features("customer_activity", (9_200_000_021,), {"spend_7d": 1.5, "spend_28d": float("-inf")}, now)
    write_features("customer_repertoire", (9_200_000_020,), {"repertoire_product_ids": [7, 8],
                                                             "repertoire_scores": [1.0, float("inf")]}, now)
    write_features("customer_repertoire", (9_200_000_021,), {"repertoire_product_ids": [9],
                                                             "repertoire_scores": [0.5]}, now)
    response = http.post("/v1/features", json={
        "features": ["customer_activity:spend_7d", "customer_activity:spend_28d", "customer_activity:orders_7d",
                     "customer_activity:last_order_at", "customer_repertoire:repertoire_product_ids",
                     "customer_repertoire:repertoire_scores"],
        "entities": {"customer_id": [9_200_000_020, 9_200_000_021]}})
    assert response.status_code == 200, response.text
    _, spend7, spend28, orders, last_order, ids, scores = (c["values"] for c in response.json()["results"])
    assert spend7 == ["Infinity", 1.5]
    assert spend28 == ["NaN", "-Infinity"]
    assert orders == [2, None]
    assert last_order == [int(last.timestamp()), None]
    assert ids == [[7, 8], [9]]
    assert scores == [[1.0, "Infinity"], [0.5]]


# ---- bounds and clock skew at the door: a 400 naming the event and the field, never a 500 ------------------------


POISON = [  # (field, value) of issue 16's poison pills, each in a purchase
    ("ts", "2100-01-01T00:00:00Z"),
    ("ts", "2300-01-01T00:00:00Z"),
    ("sales_value", 1e308),
    ("customer_id", 2**63),
    ("customer_id", 2**64),
    ("basket_id", 2**64),
    ("store_id", 2**31),
    ("product_id", 2**44),
    ("quantity", 10**9),
    ("discounts", -1.0),
    ("event_id", "e" * 200),
]


def _purchase(i: int, **extra) -> dict:
    return {"type": "purchase", "event_id": f"poison-{i}", "ts": "2017-06-01T10:00:00Z", "customer_id": 7,
            "store_id": 3, "basket_id": 5, "product_id": 1000, "quantity": 1, "sales_value": 1.0, **extra}


def test_poison_pills_get_a_400_naming_the_event_and_field(events_http, feast_applied):
    client = sync_client(feast_applied)
    before = client.xlen(EVENTS_STREAM)
    for n, (field, value) in enumerate(POISON):
        response = events_http.post("/v1/events", json={"events": [_purchase(2 * n), _purchase(2 * n + 1,
                                                                                             **{field: value})]})
        assert response.status_code == 400, (field, value, response.status_code, response.text)
        body = response.json()
        assert [e["index"] for e in body["errors"]] == [1], body
        assert field in body["errors"][0]["reason"], body
    # JSON's way to say inf (and a number no float holds): still a 400
    raw = b'{"events": [{"type": "purchase", "event_id": "inf", "ts": "2017-06-01T10:00:00Z", "basket_id": 1, ' \
          b'"product_id": 1, "sales_value": 1e400}]}'
    response = events_http.post("/v1/events", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert client.xlen(EVENTS_STREAM) == before
    # product ids >= 2^32 and store ids up to 2^19 - 1 are fine (the pair key holds them)
    ok = events_http.post("/v1/events", json={"events": [_purchase(99, product_id=2**32 + 5, store_id=2**19 - 1)]})
    assert ok.status_code == 202, ok.text


def test_clock_and_skew_at_the_door(events_http, feast_applied):
    """Event clock: ts may be at most a day past the watermark (and never past wall clock + 5 min)."""
    from pantry.clock import publish_watermark
    from pantry.keys import WATERMARK

    client = sync_client(feast_applied)
    saved = client.get(WATERMARK)
    try:
        wm = datetime(2017, 8, 1, 12, tzinfo=UTC)
        client.delete(WATERMARK)
        publish_watermark(client, wm)
        clock = events_http.get("/v1/clock")
        assert clock.status_code == 200, clock.text
        body = clock.json()
        assert body["mode"] == "event" and body["watermark"] == "2017-08-01T12:00:00Z"
        assert body["now"] == body["watermark"]
        assert body["skew_allowed_s"] == 86400.0 and body["max_accepted_ts"] == "2017-08-02T12:00:00Z"
        ready = events_http.get("/readyz").json()
        assert ready["clock"]["max_accepted_ts"] == "2017-08-02T12:00:00Z", ready
        edge = _event(50, ts="2017-08-02T12:00:00Z")
        ahead = _event(51, ts="2017-08-02T12:00:01Z")
        response = events_http.post("/v1/events", json={"events": [edge, ahead, _event(52, ts="2100-01-01T00:00:00Z")]})
        assert response.status_code == 400
        errors = response.json()["errors"]
        assert [e["index"] for e in errors] == [1, 2] and "ts" in errors[0]["reason"] and "ts" in errors[1]["reason"]
        assert "2017-08-02T12:00:00+00:00" in errors[0]["reason"], errors  # says what it would have accepted
        assert events_http.post("/v1/events", json={"events": [edge]}).status_code == 202
        # no watermark yet: the first event is judged against the wall clock (+ 5 min)
        client.delete(WATERMARK)
        wall = datetime.now(UTC)
        body = events_http.get("/v1/clock").json()
        assert body["watermark"] is None and body["skew_allowed_s"] == 300.0
        first = events_http.post("/v1/events", json={"events": [_event(53, ts="2017-01-01T00:00:00Z")]})
        assert first.status_code == 202, first.text
        future = (wall + timedelta(minutes=10)).isoformat()
        assert events_http.post("/v1/events", json={"events": [_event(54, ts=future)]}).status_code == 400
    finally:
        client.delete(WATERMARK)
        if saved is not None:
            client.set(WATERMARK, saved)


def test_wall_clock_skew_at_the_door(feast_applied, tmp_path):
    """Wall clock: ts at most 5 minutes ahead of the server's clock; the watermark plays no part."""
    import os
    import shutil

    import msgspec

    from tests.serving.conftest import api_headers, start_server

    data_dir = tmp_path / "data"  # its own (a server empties its metrics directory there at start)
    data_dir.mkdir()
    shutil.copy(feast_applied.registry_path, data_dir / "registry.db")
    os.symlink(feast_applied.dataset_dir, data_dir / "data")
    # and its own Redis db: the events it posts are stamped now (2026), which would move the clock of any live flow
    # a later test runs on the session's stream (2017 data) and make its events late
    settings = msgspec.structs.replace(feast_applied, data_dir=data_dir,
                                       redis_url=f"redis://127.0.0.1:{feast_applied.embedded_redis_port}/13")
    from pantry.redis_server import sync_client

    sync_client(settings).flushdb()
    server = start_server(settings, tmp_path, extra_env={"PANTRY_CLOCK": "wall"})
    try:
        with httpx.Client(base_url=server.url, timeout=10.0, headers=api_headers()) as http:
            wall = datetime.now(UTC)
            clock = http.get("/v1/clock").json()
            assert clock["mode"] == "wall" and clock["skew_allowed_s"] == 300.0
            assert abs(datetime.fromisoformat(clock["now"]) - wall) < timedelta(seconds=30)
            ok = _event(60, ts=(wall + timedelta(minutes=3)).isoformat())
            ahead = _event(61, ts=(wall + timedelta(minutes=10)).isoformat())
            response = http.post("/v1/events", json={"events": [ok, ahead]})
            assert response.status_code == 400 and [e["index"] for e in response.json()["errors"]] == [1]
            assert "wall clock" in response.json()["errors"][0]["reason"]
            assert http.post("/v1/events", json={"events": [ok]}).status_code == 202
    finally:
        server.stop()
