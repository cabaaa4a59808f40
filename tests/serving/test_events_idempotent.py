"""POST /v1/events writes a batch once: posted twice, retried after a timeout whose write committed (DEBUG SLEEP on a
real Redis), and a failing write path (CLIENT PAUSE WRITE) leaves the breaker of feature reads closed."""

from __future__ import annotations

import asyncio
import threading
import time

import msgspec
import pytest
from litestar.testing import AsyncTestClient
from redis.crc import key_slot

from pantry.events import decode_msgpack
from pantry.keys import EVENT_FIELD, EVENTS_STREAM
from pantry.redis_server import sync_client
from serving.app import create_app
from serving.ingest import batch_key, pack_events

UNKNOWN = 9_100_000_002



@pytest.fixture()
def own_settings(own_settings):
    """The write path with a short timeout (a DEBUG SLEEP outlasts it), no access log."""
    return msgspec.structs.replace(own_settings, events_write_timeout_s=0.2, access_log="off")


def _batch(tag: str, n: int = 20) -> dict:
    return {"events": [{"type": "add_to_cart", "event_id": f"idem-{tag}-{i}", "ts": "2017-06-01T10:00:00Z",
                        "customer_id": 7, "store_id": 3, "product_id": 1000 + i} for i in range(n)]}


def _stream_ids(settings) -> list[str]:
    client = sync_client(settings)
    return [decode_msgpack(fields[EVENT_FIELD]).event_id for _, fields in client.xrange(EVENTS_STREAM)]


async def test_an_integer_past_64_bits_is_a_400_naming_the_event(own_settings, api_keys):
    batch = _batch("big", 2)
    batch["events"][1]["product_id"] = 2**64
    async with AsyncTestClient(app=create_app(own_settings), timeout=10) as client:
        client.headers.update(api_keys.headers("data"))
        response = await client.post("/v1/events", json=batch)
    assert response.status_code == 400, response.text
    assert [e["index"] for e in response.json()["errors"]] == [1]
    assert _stream_ids(own_settings) == []


def test_the_batch_marker_is_in_the_slot_of_the_stream():
    assert key_slot(batch_key(pack_events([b"x"])).encode()) == key_slot(EVENTS_STREAM.encode())
    assert batch_key(pack_events([b"ab", b"c"])) != batch_key(pack_events([b"a", b"bc"]))


async def test_a_batch_posted_twice_is_written_once(own_settings, api_keys):
    async with AsyncTestClient(app=create_app(own_settings), timeout=10) as client:
        client.headers.update(api_keys.headers("data"))
        first = await client.post("/v1/events", json=_batch("twice"))
        again = await client.post("/v1/events", json=_batch("twice"))
        other = await client.post("/v1/events", json=_batch("other", 3))
    assert first.status_code == again.status_code == other.status_code == 202
    assert first.json() == {"accepted": 20, "duplicate": False}
    assert again.json() == {"accepted": 20, "duplicate": True}
    ids = _stream_ids(own_settings)
    assert len(ids) == 23 and len(set(ids)) == 23


async def test_a_write_that_timed_out_after_committing_is_retried_without_duplicates(own_settings, api_keys):
    admin = sync_client(own_settings)
    async with AsyncTestClient(app=create_app(own_settings), timeout=10) as client:
        client.headers.update(api_keys.headers("data"))
        assert (await client.post("/v1/events", json=_batch("warm", 1))).status_code == 202  # script loaded
        admin.config_resetstat()
        # Redis stops for 0.35 s: the first attempt's EVALSHA waits in its socket and times out (0.2 s); the retry
        # is sent; both run when Redis wakes: the first writes the batch, the retry finds the marker
        sleeper = threading.Thread(target=lambda: sync_client(own_settings).execute_command("DEBUG", "SLEEP", "0.35"))
        sleeper.start()
        await asyncio.sleep(0.05)
        response = await client.post("/v1/events", json=_batch("slow"))
        sleeper.join()
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 20, "duplicate": False}  # our own retry found our own write
    stats = admin.info("commandstats")
    assert stats["cmdstat_evalsha"]["calls"] >= 2  # the write did time out and was sent again
    ids = [i for i in _stream_ids(own_settings) if i.startswith("idem-slow-")]
    assert len(ids) == 20 and len(set(ids)) == 20


async def test_a_failing_write_path_leaves_the_read_breaker_closed(own_settings, api_keys):
    admin = sync_client(own_settings)
    async with AsyncTestClient(app=create_app(own_settings), timeout=10) as client:
        client.headers.update(api_keys.headers("data"))
        svc = client.app.state.services
        admin.execute_command("CLIENT", "PAUSE", "3000", "WRITE")  # EVALSHA waits; reads go on
        try:
            statuses = []
            started = time.monotonic()
            while svc.events_store.breaker.state == "closed" and time.monotonic() - started < 2.5:
                statuses.append((await client.post("/v1/events", json=_batch(f"p{len(statuses)}", 2))).status_code)
            assert svc.events_store.breaker.state != "closed" and set(statuses) == {503}
            assert svc.store.breaker.state == "closed"
            answer = await client.post("/v1/recommendations", json={"customer_id": UNKNOWN, "k": 3})
            assert answer.status_code == 200 and answer.json()["fallback"] == "cold_start"  # features were read
        finally:
            admin.execute_command("CLIENT", "UNPAUSE")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # the write path comes back on its own (half-open probe)
            response = await client.post("/v1/events", json=_batch("after", 2))
            if response.status_code == 202:
                break
            await asyncio.sleep(0.2)
        assert response.status_code == 202
