"""The event stream in partitions (pantry/partitions.py), everywhere outside the live flow, on a real Redis of the
test's own: POST /v1/events puts each event in its partition's stream, once (a batch posted again writes nothing, a
retry after a partial failure writes only the partitions that were not written); with one partition every key is
today's; an erasure's marker goes to the customer's partition and its XDEL covers every partition; readiness and
/metrics judge and sum every partition; the console's stream status and decision lookup read the right streams."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from types import SimpleNamespace

import msgspec
import pytest
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families

from pantry import events
from pantry.erasure import FORGET_FIELD, forget
from pantry.events import batch_from_builtins, decode_msgpack, encode_msgpack
from pantry.featurestore import repo
from pantry.health import live_flow
from pantry.keys import EVENT_BATCH_PREFIX, EVENT_FIELD, EVENTS_STREAM, LIVE_HEARTBEAT
from pantry.partitions import counters_key, events_stream, heartbeat_key, partition_of
from pantry.redis_server import sync_client
from serving.app import create_app
from serving.console import decision_lookup, stream_status
from serving.ingest import batch_key, pack_events
from serving.redis_guard import GuardedStore
from serving.services import read_pipeline, serving_client

N = 3
TS = "2017-06-01T10:00:00Z"
WHEN = datetime(2017, 6, 1, 10, tzinfo=UTC)


def _with(settings, **changes):
    return msgspec.structs.replace(settings, access_log="off", **changes)


@pytest.fixture()
def partitioned(own_settings):
    return _with(own_settings, stream_partitions=N)


def _batch(tag: str) -> list[dict]:
    """Customers 10..13 (partitions 1, 2, 0, 1) and an inventory count of store 5 (no customer: partition 2)."""
    out: list[dict] = [{"type": "add_to_cart", "event_id": f"{tag}-{c}", "ts": TS, "customer_id": c, "store_id": 3,
                        "product_id": 1000 + c} for c in (10, 11, 12, 13)]
    out.append({"type": "inventory", "event_id": f"{tag}-inv", "ts": TS, "store_id": 5, "product_id": 7,
                "on_hand": 4})
    return out


def _ids(client, stream: str) -> list[str]:
    return [decode_msgpack(fields[EVENT_FIELD]).event_id for _, fields in client.xrange(stream)]


def _packed(batch: list[dict]) -> bytes:
    return pack_events([encode_msgpack(e) for e in batch_from_builtins(batch)])


async def _post(settings, api_keys, *batches: list[dict]) -> list:
    async with AsyncTestClient(app=create_app(settings), timeout=10) as client:
        client.headers.update(api_keys.headers("data"))
        return [await client.post("/v1/events", json={"events": batch}) for batch in batches]


async def test_each_event_goes_to_its_partition_once(partitioned, api_keys):
    batch = _batch("part")
    first, again = await _post(partitioned, api_keys, batch, batch)
    assert first.status_code == again.status_code == 202, first.text
    assert first.json() == {"accepted": 5, "duplicate": False}
    assert again.json() == {"accepted": 5, "duplicate": True}  # every partition's share was there already
    client = sync_client(partitioned)
    assert [_ids(client, events_stream(p)) for p in range(N)] == [
        ["part-12"], ["part-10", "part-13"], ["part-11", "part-inv"]]  # each in the batch's order, once
    packed = _packed(batch)
    for p in range(N):  # the same digest (the whole batch's) names the marker in every partition
        assert client.exists(batch_key(packed, p))


async def test_a_retry_after_a_partial_write_writes_only_the_missing_partitions(partitioned, api_keys):
    client = sync_client(partitioned)
    client.set(events_stream(2), "not a stream")  # partition 2's XADD fails (WRONGTYPE); 0 and 1 are written
    batch = _batch("partial")
    (failed,) = await _post(partitioned, api_keys, batch)
    assert failed.status_code >= 500
    assert [_ids(client, events_stream(p)) for p in (0, 1)] == [["partial-12"], ["partial-10", "partial-13"]]
    assert not client.exists(batch_key(_packed(batch), 2))
    client.delete(events_stream(2))
    retried, again = await _post(partitioned, api_keys, batch, batch)
    assert retried.json() == {"accepted": 5, "duplicate": False}  # partition 2 was written by this request
    assert again.json() == {"accepted": 5, "duplicate": True}
    assert [_ids(client, events_stream(p)) for p in range(N)] == [
        ["partial-12"], ["partial-10", "partial-13"], ["partial-11", "partial-inv"]]


async def test_one_partition_keeps_todays_keys(own_settings, api_keys):
    settings = _with(own_settings)
    assert settings.stream_partitions == 1
    batch = _batch("one")
    first, again = await _post(settings, api_keys, batch, batch)
    assert (first.json(), again.json()) == ({"accepted": 5, "duplicate": False}, {"accepted": 5, "duplicate": True})
    client = sync_client(settings)
    assert _ids(client, EVENTS_STREAM) == [e["event_id"] for e in batch]
    assert client.exists(EVENT_BATCH_PREFIX + hashlib.sha256(_packed(batch)).hexdigest())
    assert [k.decode() for k in client.scan_iter("pantry:events*")] == [EVENTS_STREAM]
    assert len(list(client.scan_iter("{pantry:events}:batch:*"))) == 1
    assert (heartbeat_key(0), counters_key(0), events_stream(0)) == (LIVE_HEARTBEAT, "pantry:stream:counters",
                                                                      EVENTS_STREAM)


def test_an_erasure_marks_the_customers_partition_and_deletes_from_every_partition(partitioned, tmp_path):
    settings = _with(partitioned, artifacts_dir=tmp_path / "artifacts")  # no model holds the customer
    client = sync_client(settings)
    customer, other = 9_100_000_010, 9_100_000_011
    home = partition_of(customer, None, N)

    def xadd(p: int, event_id: str, cid: int) -> None:
        event = events.ProductView(event_id=event_id, ts=WHEN, customer_id=cid, product_id=1)
        client.xadd(events_stream(p), {EVENT_FIELD: encode_msgpack(event)})

    xadd(home, "mine-home", customer)
    xadd((home + 1) % N, "mine-elsewhere", customer)  # written under another partition count
    for p in range(N):
        xadd(p, f"other-{p}", other)
    counts = forget(settings, customer, "test", client=client, layout=repo.layout(settings))
    assert counts["events"] == 2 and counts["flow_state"] == 0  # no live flow beats here: nothing to wait for
    for p in range(N):
        entries = client.xrange(events_stream(p))
        markers = [f[FORGET_FIELD] for _, f in entries if FORGET_FIELD in f]
        assert markers == ([str(customer).encode()] if p == home else []), p
        assert [decode_msgpack(f[EVENT_FIELD]).event_id for _, f in entries if EVENT_FIELD in f] == [f"other-{p}"]


def _beat(client, p: int, last_id: str, age_s: float = 0.0) -> None:
    seconds, micros = client.time()
    client.hset(heartbeat_key(p), mapping={"ts": f"{seconds + micros / 1e6 - age_s:.6f}", "last_id": last_id,
                                           "pid": str(100 + p), "host": "h", "processed": "0"})


def _lagging(client, lag_s: float = 30.0) -> None:
    """Partitions 0 and 1 caught up; partition 2's oldest unprocessed entry `lag_s` old."""
    seconds, _ = client.time()
    old = f"{(seconds - int(lag_s)) * 1000}-0"
    for p in range(N):
        client.xadd(events_stream(p), {EVENT_FIELD: b"x"}, id=old if p == 2 else "*")
    for p in range(N):
        last = client.xrevrange(events_stream(p), count=1)[0][0].decode()
        _beat(client, p, "0-1" if p == 2 else last)


def test_readiness_reports_the_lagging_partition(partitioned):
    client = sync_client(partitioned)
    flow = live_flow(client, 10, 0.0, N)
    assert flow.heartbeat_age_s is None and "no heartbeat of partition 0 of 3" in flow.detail
    _lagging(client)
    flow = live_flow(client, 10, max_lag_s=5, partitions=N)
    assert not flow.ok and flow.behind and 29 <= flow.lag_s <= 40, flow
    assert "partition 2 of 3" in flow.detail and flow.pid == 102 and "fallen behind" in flow.detail
    assert live_flow(client, 10, max_lag_s=5).ok  # partition 0 alone is caught up
    _beat(client, 1, client.xrevrange(events_stream(1), count=1)[0][0].decode(), age_s=60)
    stale = live_flow(client, 10, max_lag_s=5, partitions=N)  # a stale heartbeat is reported before a lag
    assert not stale.ok and "partition 1 of 3" in stale.detail and stale.heartbeat_age_s >= 60, stale
    for p in range(N):
        _beat(client, p, client.xrevrange(events_stream(p), count=1)[0][0].decode())
    fine = live_flow(client, 10, max_lag_s=5, partitions=N)
    assert fine.ok and fine.lag_s == 0.0 and "processing its 3 partitions" in fine.detail, fine


async def test_readyz_and_metrics_read_every_partition(partitioned, api_keys):
    settings = _with(partitioned, live_max_age_s=10.0, live_max_lag_s=5.0)
    client = sync_client(settings)
    _lagging(client)
    for p, counts in enumerate(({"processed": 1, "trimmed": 2}, {"processed": 2, "late": 1}, {"trimmed": 1})):
        client.hset(counters_key(p), mapping=counts)
    async with AsyncTestClient(app=create_app(settings), timeout=10) as http:
        ready = await http.get("/readyz")
        scraped = await http.get("/metrics", headers=api_keys.headers("data"))
    assert ready.status_code == 503 and scraped.status_code == 200, scraped.text[:500]
    body = ready.json()
    assert body["live_flow"]["lag_s"] >= 29 and body["live_flow"]["behind"] and body["live_flow"]["pid"] == 102
    assert any("partition 2 of 3" in reason for reason in body["reasons"]), body["reasons"]
    families = {f.name: f for f in text_string_to_metric_families(scraped.text)}
    totals = {s.labels["outcome"]: s.value for s in families["pantry_stream_events"].samples
              if s.name == "pantry_stream_events_total"}
    assert (totals["processed"], totals["late"], totals["duplicate"]) == (3, 1, 0)
    # 3 entries (one a partition) + 3 trimmed, 4 taken by the gates: 2 waiting
    assert families["pantry_stream_lag_events"].samples[0].value == 2


async def test_the_console_reads_every_partition(partitioned):
    client = sync_client(partitioned)
    _lagging(client)
    client.hset(counters_key(0), mapping={"processed": 5, "max_event_ts": 100.0})
    client.hset(counters_key(2), mapping={"processed": 7, "max_event_ts": 200.0})
    redis = serving_client(partitioned)
    svc = SimpleNamespace(redis=redis, store=GuardedStore(), settings=partitioned)
    try:
        status = await stream_status.read(svc, stream_status.ThroughputMeter())
    finally:
        await redis.aclose()
    assert status.stream_length == 3 and status.pending == 1 and not status.pending_capped
    assert status.counters["processed"] == 12 and status.counters["max_event_ts"] == 200.0
    assert "partition 2: pid 102" in status.flow.detail and status.flow.lag_s >= 29, status.flow
    assert [f.pid for f in status.partitions] == [100, 101, 102] and [f.behind for f in status.partitions] == \
        [False, False, False]  # the console judges the heartbeat only


async def test_a_decisions_outcomes_are_read_from_its_customers_partition(partitioned):
    client = sync_client(partitioned)
    customer, decision = 9_100_000_012, "1a23a514f15-7ba1ddec3c67dfcd"
    home = partition_of(customer, None, N)
    for p, event_id in ((home, "click-home"), ((home + 1) % N, "click-elsewhere")):
        click = events.Click(event_id=event_id, ts=WHEN, customer_id=customer, decision_id=decision)
        client.xadd(events_stream(p), {EVENT_FIELD: encode_msgpack(click)})
    pipeline = read_pipeline(partitioned)
    svc = SimpleNamespace(store=GuardedStore(), pipeline=pipeline, settings=partitioned)
    try:
        deadline = time.perf_counter() + 5.0
        mine, scan = await decision_lookup.outcomes_of(svc, decision, 0, deadline, customer_id=customer)
        unknown, every = await decision_lookup.outcomes_of(svc, decision, 0, deadline)
    finally:
        await pipeline.aclose()
    assert [r.event.event_id for r in mine] == ["click-home"] and scan.entries == 1 and scan.stopped == "end"
    assert sorted(r.event.event_id for r in unknown) == ["click-elsewhere", "click-home"] and every.entries == 2


async def test_the_console_page_shows_each_partition(partitioned, api_keys):
    """The operator console's features page lists the partitions, one with a stale heartbeat flagged."""
    from litestar.testing import AsyncTestClient

    from serving.app import create_app
    from tests.serving.test_console_features import _text, csrf_of

    client = sync_client(partitioned)
    _lagging(client)
    _beat(client, 1, client.xrevrange(events_stream(1), count=1)[0][0].decode(), age_s=60)
    async with AsyncTestClient(app=create_app(partitioned), timeout=10) as http:
        token = csrf_of((await http.get("/console/login")).text)
        answer = await http.post("/console/login", data={"api_key": api_keys.ml_engineer, "csrf_token": token},
                                 follow_redirects=False)
        assert answer.status_code == 303, answer.text
        answer = await http.get("/console/features")
    assert answer.status_code == 200, answer.text[:500]
    assert 'id="partition-1" class="attention"' in answer.text and 'id="partition-0">' in answer.text
    text = _text(answer.text)
    assert "Stream partitions" in text and "pid 102" in text and "and its other 2 partitions" in text, text[:3000]
