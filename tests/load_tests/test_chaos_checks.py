"""The chaos harness's measurements can fail: the lost-event checks on a real Redis with a synthetic stream, and the
recovery detector on synthetic traffic."""

from __future__ import annotations

from load_tests.chaos import faults, lost
from load_tests.chaos.traffic import Answer, Batch, Traffic
from pantry.events import encode_msgpack, from_builtins
from pantry.keys import EVENT_FIELD, EVENTS_STREAM, STREAM_COUNTERS
from pantry.partitions import counters_key, events_stream


def _xadd(client, event_id: str, stream: str = EVENTS_STREAM) -> None:
    event = from_builtins({"type": "product_view", "event_id": event_id, "ts": "2017-06-01T10:00:00Z",
                           "customer_id": 1, "product_id": 2})
    client.xadd(stream, {EVENT_FIELD: encode_msgpack(event)})


def test_lost_and_twice_written_events_are_found(redis_client):
    start = lost.last_id(redis_client)
    for i in (1, 2, 2, 3):
        _xadd(redis_client, f"chaos-t-{i}")
    _xadd(redis_client, "someone-else-1")
    check = lost.check_stream(redis_client, start, "chaos-t-", ["chaos-t-1", "chaos-t-2", "chaos-t-4"])
    assert (check.acked, check.missing, check.written_twice) == (3, 1, 1)
    assert check.missing_sample == ["chaos-t-4"]
    clean = lost.check_stream(redis_client, start, "chaos-t-", ["chaos-t-1", "chaos-t-3"])
    assert clean.missing == 0


def test_entries_the_flow_did_not_count_are_unprocessed(redis_client):
    redis_client.delete(STREAM_COUNTERS)
    redis_client.hset(STREAM_COUNTERS, mapping={"processed": 10, "duplicate": 1})
    start, seen = lost.last_id(redis_client), lost.flow_seen(redis_client)
    for i in range(5):
        _xadd(redis_client, f"chaos-f-{i}")
    redis_client.hincrby(STREAM_COUNTERS, "processed", 3)
    behind = lost.check_flow(redis_client, start, seen, timeout_s=0.5)
    assert (behind.stream_added, behind.flow_seen_added, behind.unprocessed) == (5, 3, 2)
    redis_client.hincrby(STREAM_COUNTERS, "late", 2)
    assert lost.check_flow(redis_client, start, seen, timeout_s=0.5).unprocessed == 0
    redis_client.delete(STREAM_COUNTERS)


def test_the_checks_cover_every_partition(redis_client):
    """Two partitions: the position names each one's last id; the streams and the counters of both are read."""
    second, saved = events_stream(1), redis_client.hgetall(STREAM_COUNTERS)
    redis_client.delete(second, counters_key(1), STREAM_COUNTERS)
    try:
        _xadd(redis_client, "chaos-p-old", second)  # before the start: not counted
        start, seen = lost.last_id(redis_client, 2), lost.flow_seen(redis_client, 2)
        assert len(start.split(",")) == 2 and lost.last_id(redis_client) == start.split(",")[0]
        for i, stream in enumerate((EVENTS_STREAM, second, second)):
            _xadd(redis_client, f"chaos-p-{i}", stream)
        check = lost.check_stream(redis_client, start, "chaos-p-", ["chaos-p-0", "chaos-p-1", "chaos-p-2"])
        assert (check.acked, check.missing, check.written_twice) == (3, 0, 0)
        redis_client.hset(STREAM_COUNTERS, "processed", 1)
        redis_client.hset(counters_key(1), mapping={"processed": 1, "duplicate": 1})
        flow = lost.check_flow(redis_client, start, seen, timeout_s=0.5)
        assert (flow.stream_added, flow.flow_seen_added, flow.unprocessed) == (3, 3, 0)
    finally:
        redis_client.delete(second, counters_key(1), STREAM_COUNTERS)
        if saved:
            redis_client.hset(STREAM_COUNTERS, mapping=saved)


def test_recovery_needs_clean_answers_and_acknowledged_batches():
    traffic = Traffic("http://127.0.0.1:1", reqs=None, watermark=0.0, client_headers={}, ingest_headers={})
    for i in range(100):  # 10 s at 10 answers/s: store_unavailable until 4 s, then clean
        t = i / 10
        traffic.answers.append(Answer(t, 0, 200, 0.01, "store_unavailable" if t < 4 else None))
    for i in range(10):  # a batch each second; the one at 6 s needed a retry
        traffic.batches.append(Batch(float(i), ["x"], attempts=2 if i == 6 else 1,
                                     statuses=[503, 202] if i == 6 else [202], acked_t=float(i)))
    assert faults.clean_from(traffic, 0.0, 10.0) == 6.0
    assert faults.clean_from(traffic, 0.0, 7.5) is None  # not 2 s of clean traffic yet
    traffic.batches[6] = Batch(6.0, ["x"], attempts=1, statuses=[202], acked_t=6.0)
    assert faults.clean_from(traffic, 0.0, 10.0) == 3.9
    traffic.answers.append(Answer(9.0, 1, 503, 0.01, None))  # a 5xx later: not recovered before it
    assert faults.clean_from(traffic, 0.0, 10.0) is None
    traffic.answers[-1] = Answer(7.0, 1, 200, faults.SLOW_S + 0.1, None)  # a late 200: still catching up
    assert faults.clean_from(traffic, 0.0, 10.0) == 7.0
