"""Redis stops mid-test: every model endpoint still answers 200 with a fallback, quickly; events get 503;
after Redis restarts the normal path comes back on its own (circuit breaker half-open probe)."""

from __future__ import annotations

import time

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from pantry import apikeys
from pantry.redis_server import sync_client
from serving.app import create_app

UNKNOWN = 9_100_000_001



async def _recommend(client, k=4):
    start = time.perf_counter()
    response = await client.post("/v1/recommendations", json={"customer_id": UNKNOWN, "k": k})
    return response, time.perf_counter() - start


async def test_redis_outage_degrades_then_recovers(own_settings, own_redis, api_keys):
    async with AsyncTestClient(app=create_app(own_settings), timeout=10) as client:
        client.headers.update(api_keys.headers("data"))
        response, _ = await _recommend(client)
        assert response.status_code == 200 and response.json()["fallback"] == "cold_start"
        event = {"type": "product_view", "event_id": "e-1", "ts": "2017-05-01T10:00:00Z", "customer_id": 1,
                 "product_id": 2}
        assert (await client.post("/v1/events", json={"events": [event]})).status_code == 202

        own_redis.stop()
        slowest = 0.0
        for _ in range(15):
            response, took = await _recommend(client)
            slowest = max(slowest, took)
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["fallback"] == "store_unavailable"
            assert len(body["items"]) == 4  # popularity needs no Redis
        assert slowest < 0.5
        for path, body in (
            ("/v1/substitutions", {"customer_id": UNKNOWN, "store_id": 1, "product_ids": [1, 2]}),
            ("/v1/next-best-action", {"customer_id": UNKNOWN}),
        ):
            response = await client.post(path, json=body)
            assert response.status_code == 200, response.text
            assert response.json()["fallback"] in ("store_unavailable", "model_unavailable")
        events = await client.post("/v1/events", json={"events": [event]})
        assert events.status_code == 503 and "Retry-After" in events.headers
        assert (await client.get("/readyz")).json()["redis"] is False

        own_redis.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            response, _ = await _recommend(client)
            assert response.status_code == 200
            if response.json()["fallback"] == "cold_start":
                break
            time.sleep(0.2)
        else:
            pytest.fail("did not recover after Redis came back")
        assert (await client.post("/v1/events", json={"events": [event]})).status_code == 202


async def test_rate_limit_is_per_key_id_shared_in_redis_and_cors_is_only_for_configured_origins(own_settings,
                                                                                                own_redis, api_keys):
    limited = msgspec.structs.replace(own_settings, rate_limit_per_minute=5, cors_origins=("https://shop.example",))
    body = {"customer_id": UNKNOWN, "k": 2}
    redis = sync_client(limited)
    async with AsyncTestClient(app=create_app(limited), timeout=10) as a, \
            AsyncTestClient(app=create_app(limited), timeout=10) as b:  # two "workers", one Redis counter
        # random keys: every one is 401, and none reaches the limiter (no counter, nothing of a key in Redis)
        statuses = {(await a.post("/v1/recommendations", json=body,
                                  headers={"X-API-Key": apikeys.new_key()})).status_code for _ in range(200)}
        assert statuses == {401}
        assert list(redis.scan_iter("pantry:ratelimit:*")) == []

        minute = int(time.time() // 60)
        key = api_keys.headers("client")
        statuses = [(await (a if i % 2 else b).post("/v1/recommendations", json=body, headers=key)).status_code
                    for i in range(7)]
        if int(time.time() // 60) != minute:  # the minute rolled over mid-test: counters restarted
            pytest.skip("minute boundary")
        assert statuses[:5] == [200] * 5 and statuses[5:] == [429, 429]
        limited_response = await a.post("/v1/recommendations", json=body, headers=key)
        assert 1 <= int(limited_response.headers["Retry-After"]) <= 60
        # another key has its own counter; the counter is named by the key id, never the key
        assert (await a.post("/v1/recommendations", json=body, headers=api_keys.headers("data"))).status_code == 200
        counters = sorted(k.decode() for k in redis.scan_iter("pantry:ratelimit:*"))
        assert [c.rsplit(":", 1)[0] for c in counters] == ["pantry:ratelimit:key:test-client",
                                                           "pantry:ratelimit:key:test-data"]
        assert (await a.get("/healthz")).status_code == 200  # probes are not limited

        allowed = await a.options("/v1/recommendations", headers={
            "Origin": "https://shop.example", "Access-Control-Request-Method": "POST"})
        assert allowed.headers.get("access-control-allow-origin") == "https://shop.example"
        other = await a.options("/v1/recommendations", headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
        assert other.headers.get("access-control-allow-origin") != "https://evil.example"
