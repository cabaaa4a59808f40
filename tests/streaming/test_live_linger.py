"""The live source's linger (streaming/sources.py LivePartition.linger): after a read that did not fill a batch the
next read waits `live_linger_ms`, so entries trickling in make one batch; a full batch or an empty read does not
wait. On the real Redis of the session, in a db of its own."""

from __future__ import annotations

import time

import msgspec
import pytest

from pantry.keys import EVENT_FIELD, EVENTS_STREAM
from pantry.redis_server import sync_client
from pantry.settings import Settings
from streaming.sources import LIVE_BATCH, LivePartition, SourceState

DB = 11
LINGER_MS = 200


@pytest.fixture()
def live_settings(settings: Settings) -> Settings:
    url = settings.effective_redis_url().rsplit("/", 1)[0] + f"/{DB}"
    lingering = msgspec.structs.replace(settings, redis_url=url, live_linger_ms=LINGER_MS)
    sync_client(lingering).flushdb()
    yield lingering
    sync_client(lingering).flushdb()


def _timed_read(part: LivePartition) -> tuple[float, int]:
    started = time.monotonic()
    batches = part.next_batch()
    return time.monotonic() - started, sum(len(b.raws) for b in batches)


def test_a_partial_batch_makes_the_next_read_wait_and_gather(live_settings: Settings) -> None:
    client = sync_client(live_settings)
    part = LivePartition(live_settings, SourceState(), stop_flag=None)
    try:
        client.xadd(EVENTS_STREAM, {EVENT_FIELD: b"a"})
        took, n = _timed_read(part)
        assert n == 1 and took < LINGER_MS / 1000  # the first entry after a quiet spell: no wait
        for payload in (b"b", b"c", b"d"):  # trickling in while the source lingers
            client.xadd(EVENTS_STREAM, {EVENT_FIELD: payload})
        took, n = _timed_read(part)
        assert took >= LINGER_MS / 1000 * 0.9
        assert n == 3  # one batch for the three
    finally:
        part.close()


def test_a_full_batch_reads_again_at_once(live_settings: Settings) -> None:
    client = sync_client(live_settings)
    pipe = client.pipeline(transaction=False)
    for i in range(LIVE_BATCH + 10):
        pipe.xadd(EVENTS_STREAM, {EVENT_FIELD: str(i).encode()})
    pipe.execute()
    part = LivePartition(live_settings, SourceState(), stop_flag=None)
    try:
        _, n = _timed_read(part)
        assert n == LIVE_BATCH
        took, n = _timed_read(part)  # a backlog: no linger between full batches
        assert n == 10 and took < LINGER_MS / 1000 / 2
    finally:
        part.close()


def test_a_shared_worker_lingers_in_the_engine_not_in_the_read(live_settings: Settings) -> None:
    """In a flow of several workers the linger and the wait for an empty stream are next_awake times: a read never
    sleeps (the worker goes on with what other workers route to it), and one called early finds nothing."""
    from datetime import UTC, datetime

    client = sync_client(live_settings)
    part = LivePartition(live_settings, SourceState(), stop_flag=None, shared_worker=True)
    try:
        assert part.next_awake() is None
        took, n = _timed_read(part)  # an empty stream: no 20-ms block in XREAD
        assert n == 0 and took < 0.015
        awake = part.next_awake()
        assert awake is not None and awake > datetime.now(UTC)  # looked at again after the block time
        time.sleep(0.03)
        client.xadd(EVENTS_STREAM, {EVENT_FIELD: b"a"})
        took, n = _timed_read(part)
        assert n == 1
        client.xadd(EVENTS_STREAM, {EVENT_FIELD: b"b"})
        awake = part.next_awake()  # a partial batch: the linger, as a time to wake at
        assert awake is not None
        assert 0.9 * LINGER_MS / 1000 <= (awake - datetime.now(UTC)).total_seconds() <= LINGER_MS / 1000
        took, n = _timed_read(part)  # called early: nothing, at once
        assert n == 0 and took < LINGER_MS / 1000 / 4
        time.sleep(max(0.0, (awake - datetime.now(UTC)).total_seconds()))
        took, n = _timed_read(part)
        assert n == 1 and took < LINGER_MS / 1000 / 4
    finally:
        part.close()
