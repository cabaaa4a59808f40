"""POST /v1/recommendations over real HTTP against a granian-served app and the session Redis."""

from __future__ import annotations

import json
import re
import socket
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import urlparse

import pytest

from pantry.keys import DECISIONS_STREAM
from pantry.redis_server import sync_client

URL = "/v1/recommendations"
UNKNOWN_CUSTOMER = 9_000_000_001


def test_health_ready_and_schema(http):
    assert http.get("/healthz").json() == {"status": "ok"}
    ready = http.get("/readyz")
    body = ready.json()
    assert body["redis"] is True and body["layout"] is True
    # ready only when every model is loaded; otherwise 503 and the body says which are missing
    assert ready.status_code == (200 if all(body["models"].values()) else 503)
    # no live flow runs beside this server: reported, not judged (PANTRY_LIVE_MAX_AGE_S=0 in conftest)
    assert body["live_flow"]["max_age_s"] == 0 and body["live_flow"]["ok"] is True
    assert body["live_flow"]["max_lag_s"] == 0 and body["live_flow"]["behind"] is False  # PANTRY_LIVE_MAX_LAG_S=0
    assert body["durability"]["appendonly"] == "yes"  # the session's embedded Redis
    schema = http.get("/schema/openapi.json").json()
    for path in ("/v1/recommendations", "/v1/substitutions", "/v1/next-best-action", "/v1/features", "/v1/events"):
        assert path in schema["paths"], path
    k = schema["components"]["schemas"]["RecommendationRequest"]["properties"]["k"]
    assert k["minimum"] == 1 and k["maximum"] == 100


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"customer_id": 1, "k": -1}, "k"),
        ({"customer_id": 1, "k": 0}, "k"),
        ({"customer_id": 1, "k": 101}, "k"),
        ({"customer_id": "one"}, "customer_id"),
        ({"customer_id": 1, "k": "ten"}, "k"),
        ({"k": 5}, "customer_id"),
        ({"customer_id": 1, "surface": "everything"}, "surface"),
        ({"customer_id": 1, "exclude_product_ids": "5"}, "exclude_product_ids"),
        ({"customer_id": 1, "colour": "red"}, "colour"),
    ],
)
def test_invalid_input_is_400_naming_the_field(http, body, field):
    response = http.post(URL, json=body)
    assert response.status_code == 400, response.text
    assert field in response.json()["detail"]


def test_malformed_json_and_wrong_content_type(http):
    assert http.post(URL, content=b"{not json", headers={"content-type": "application/json"}).status_code == 400
    assert http.post(URL, content=b"customer_id=1", headers={"content-type": "text/plain"}).status_code == 415


def test_unknown_customer_gets_popular_items_with_cold_start(http):
    response = http.post(URL, json={"customer_id": UNKNOWN_CUSTOMER, "k": 5})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["fallback"] == "cold_start"
    assert body["decision_id"] and body["model_version"]
    assert len(body["items"]) == 5
    assert len({item["product_id"] for item in body["items"]}) == 5
    scores = [item["score"] for item in body["items"]]
    assert scores == sorted(scores, reverse=True)


def test_exclusions_and_cart_items_are_left_out(http, write_features):
    customer = 9_000_000_002
    base = http.post(URL, json={"customer_id": UNKNOWN_CUSTOMER, "k": 6}).json()["items"]
    top = [item["product_id"] for item in base]
    now = datetime(2017, 6, 1, 12, tzinfo=UTC)
    write_features("customer_session", (customer,), {
        "session_events": 3, "session_distinct_products": 2, "session_product_ids": top[:2],
        "cart_product_ids": top[:2], "session_spend": 4.5, "session_started_at": now - timedelta(minutes=5),
    }, now - timedelta(minutes=1))
    response = http.post(URL, json={"customer_id": customer, "k": 6, "exclude_product_ids": [top[2]],
                                    "as_of": now.isoformat()})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["fallback"] != "cold_start"  # the session row is there and fresh
    got = [item["product_id"] for item in body["items"]]
    assert len(got) == 6
    assert not set(got) & set(top[:3])


def test_stale_features_are_not_used(http, write_features):
    customer = 9_000_000_003
    written = datetime(2017, 5, 1, 9, tzinfo=UTC)
    write_features("customer_session", (customer,), {"session_events": 1, "cart_product_ids": [1]}, written)
    fresh = http.post(URL, json={"customer_id": customer, "as_of": (written + timedelta(minutes=10)).isoformat()})
    stale = http.post(URL, json={"customer_id": customer, "as_of": (written + timedelta(hours=3)).isoformat()})
    assert fresh.json()["fallback"] != "features_stale"
    assert stale.json()["fallback"] == "features_stale"  # customer_session's TTL is 1 h


def test_every_answer_is_logged(http, feast_applied):
    decision_id = http.post(URL, json={"customer_id": UNKNOWN_CUSTOMER, "k": 2}).json()["decision_id"]
    client = sync_client(feast_applied)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        entries = client.xrevrange(DECISIONS_STREAM, count=50)
        found = [f for _, f in entries if f[b"decision_id"] == decision_id.encode()]
        if found:
            assert found[0][b"endpoint"] == b"recommendations"
            assert found[0][b"fallback"] == b"cold_start"
            return
        time.sleep(0.05)
    pytest.fail("decision not in pantry:decisions")


def test_every_answer_records_the_live_flows_lag_beside_its_feature_ages(http, feast_applied, tmp_path):
    """The decision log's `stream_lag_s`: the age of the oldest event the live flow has not processed when the rows
    were read (serving/stream_lag.py, refreshed each second). A flow whose heartbeat says it processed nothing of
    the stream, with an event waiting ~1.5 s, gives answers a lag of at least 1.5 s."""
    from pantry import events
    from pantry.keys import EVENT_FIELD, EVENTS_STREAM, LIVE_HEARTBEAT

    client = sync_client(feast_applied)
    saved = client.hgetall(LIVE_HEARTBEAT)
    try:
        client.delete(LIVE_HEARTBEAT)
        client.xadd(EVENTS_STREAM, {EVENT_FIELD: events.encode_msgpack(events.ProductView(
            event_id=f"lag-{time.time_ns()}", ts=datetime(2017, 6, 1, tzinfo=UTC), customer_id=1, product_id=1))})
        seconds, micros = client.time()
        first = client.xrange(EVENTS_STREAM, count=1)[0][0]  # the oldest entry: waited at least since the XADD
        client.hset(LIVE_HEARTBEAT, mapping={"ts": f"{seconds}.{micros:06d}", "last_id": "0-0", "pid": "1",
                                             "host": "test", "processed": "0"})
        waited = int(seconds) + micros / 1e6 - int(first.split(b"-")[0]) / 1000
        time.sleep(2.6)  # the entry ages past 1.5 s, and the workers' once-a-second read sees it
        decision_id = http.post(URL, json={"customer_id": UNKNOWN_CUSTOMER, "k": 2}).json()["decision_id"]
        deadline = time.monotonic() + 3
        found = []
        while time.monotonic() < deadline and not found:
            found = [f for _, f in client.xrevrange(DECISIONS_STREAM, count=50)
                     if f[b"decision_id"] == decision_id.encode()]
            time.sleep(0.05)
        assert found, "decision not in pantry:decisions"
        lag = float(found[0][b"stream_lag_s"])
        assert lag >= 1.5 + waited, (lag, waited)
        assert b"feature_ages" in found[0]
        # `pantry decisions export` carries it as a number
        import pyarrow.parquet as pq

        from serving.decisions import export

        export(client, tmp_path / "decisions.parquet", progress=False)
        table = pq.read_table(tmp_path / "decisions.parquet").to_pydict()
        assert table["stream_lag_s"][table["decision_id"].index(decision_id)] == lag
    finally:
        client.delete(LIVE_HEARTBEAT)
        if saved:
            client.hset(LIVE_HEARTBEAT, mapping=saved)


def test_access_log_is_structured_and_carries_no_payload(http, feast_applied, api_keys):
    customer = 987_654_321  # a value that would show up in the log if a body or id leaked into it
    log_path = feast_applied.data_dir / "logs" / "access.log"

    def lines_of_this_route() -> list[dict]:
        text = log_path.read_text() if log_path.exists() else ""
        return [r for r in (json.loads(line) for line in text.splitlines() if line) if r["route"] == URL]

    before = len(lines_of_this_route())
    traced = http.post(URL, json={"customer_id": customer, "k": 2}, headers={"X-Request-ID": "trace-abc.1"})
    assert traced.headers["x-request-id"] == "trace-abc.1"  # the caller's id, when it is a sane one
    bad = http.post(URL, json={"customer_id": "x"}, headers={"X-Request-ID": "no spaces/or slashes"})
    assert re.fullmatch(r"[0-9a-f]{16}", bad.headers["x-request-id"])  # else a new one
    deadline = time.monotonic() + 3
    lines = lines_of_this_route()
    while time.monotonic() < deadline and len(lines) < before + 2:  # a line is written after its response is sent
        time.sleep(0.05)
        lines = lines_of_this_route()
    assert len(lines) >= before + 2, "no access log lines for the requests"
    assert {r["status"] for r in lines[-2:]} == {200, 400}
    for r in lines:
        assert set(r) == {"ts", "method", "route", "status", "ms", "pid", "key", "request_id"}
        assert r["method"] == "POST" and r["ms"] >= 0
    assert [r["key"] for r in lines[-2:]] == ["test-data", "test-data"]  # the key's id, never the key
    assert {r["request_id"] for r in lines[-2:]} == {"trace-abc.1", bad.headers["x-request-id"]}
    assert str(customer) not in log_path.read_text()
    assert not any(key in log_path.read_text() for key in api_keys.keys.values())


def test_a_request_that_never_finishes_gets_503_after_the_request_timeout(api, feast_applied, api_keys):
    # a client that announces a body and never sends it: the handler waits on it until the request timeout
    url = urlparse(api.url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(f"POST {URL} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     f"X-API-Key: {api_keys.client}\r\nContent-Length: 100\r\n\r\n{{".encode())
        started = time.monotonic()
        reply = sock.recv(4096).decode()
        waited = time.monotonic() - started
    status_line, _, rest = reply.partition("\r\n")
    assert " 503 " in status_line, reply
    assert "retry-after: 1" in rest.lower()
    assert "request timed out" in rest
    assert feast_applied.request_timeout_s * 0.9 <= waited < feast_applied.request_timeout_s + 3
