"""The live flow over two processes, reading one stream or two stream partitions, gives the rows one process gives
from one stream, also when one of its processes is SIGKILLed mid-stream and the flow resumes from its recovery store
(issue: sustained live throughput, "SIGKILL + resume of one live process with zero differing keys", "the existing
equality tests, now over partitions")."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta

import msgspec
import psutil
import pytest

from load_tests.bench.sustained_mix import uniform_event as _event
from load_tests.server import pantry_command
from pantry import events
from pantry.keys import EVENT_FIELD
from pantry.partitions import counters_key, events_stream, partition_of
from pantry.redis_server import sync_client
from streaming import forked_snapshots, runner
from streaming.retention import recovery_dir
from tests.streaming.test_live import LiveFlow, wait_for
from tests.streaming.test_recovery import describe, env_of, feature_hashes, isolated

N = 20_000
BASE = datetime(2017, 6, 1, 12, tzinfo=UTC)


def _events() -> list[tuple[int | None, int | None, bytes]]:
    """The sustained bench's mix (ordinary customers at random stores and products, heavy customers, a hot pair),
    1,000 events a second of event time: (customer, store, encoded event)."""
    rng, heavy = random.Random(7), [0]
    out = []
    for i in range(N):
        e = _event(rng, i, BASE + timedelta(milliseconds=i), heavy)
        out.append((e.customer_id, getattr(e, "store_id", None), events.encode_msgpack(e)))
    return out


def _xadd(client, payloads: list[tuple[int | None, int | None, bytes]], partitions: int = 1) -> None:
    """Each event to its partition's stream, as the API writes it (pantry.partitions.partition_of)."""
    for lo in range(0, len(payloads), 1000):
        pipe = client.pipeline(transaction=False)
        for customer, store, payload in payloads[lo:lo + 1000]:
            pipe.xadd(events_stream(partition_of(customer, store, partitions)), {EVENT_FIELD: payload})
        pipe.execute()


def _processed(client, partitions: int = 1) -> float:
    return runner.read_counters(client, partitions).get("processed", 0)


@pytest.fixture(scope="module")
def one_process_rows(feast_applied, tmp_path_factory):
    """The rows of one live process reading one stream: what every other layout must give."""
    payloads = _events()
    one = isolated(feast_applied, tmp_path_factory.mktemp("one"), 4)
    client_one = sync_client(one)
    _xadd(client_one, payloads)
    with LiveFlow(one):
        assert wait_for(lambda: _processed(client_one) >= N, 120, 0.2), runner.read_counters(client_one)
    return payloads, feature_hashes(one)


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    proc.send_signal(sig)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("partitions", [1, 2])
def test_two_live_processes_killed_and_resumed_give_the_rows_of_one(one_process_rows, feast_applied, tmp_path,
                                                                    partitions):
    payloads, expected = one_process_rows
    two = msgspec.structs.replace(isolated(feast_applied, tmp_path / "two", 5), stream_partitions=partitions)
    client = sync_client(two)
    env = {**env_of(two), "PANTRY_LIVE_FLOW_NICE": "0",  # snapshots every 0.5 s (env_of)
           "PANTRY_STREAM_PARTITIONS": str(partitions)}
    flow = subprocess.Popen(pantry_command("stream", "live", "--no-progress", "--processes", "2"), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        _xadd(client, payloads[:N // 2], partitions)
        assert wait_for(lambda: _processed(client, partitions) >= N // 4, 90, 0.05), \
            runner.read_counters(client, partitions)
        time.sleep(1.0)  # a snapshot or two in between
        child = psutil.Process(flow.pid).children(recursive=True)
        assert child, "no second process"
        child[0].kill()  # SIGKILL of process 1: the Bytewax cluster cannot go on
        _xadd(client, payloads[N // 2:], partitions)  # accepted meanwhile (the API would have answered 202)
        flow.wait(timeout=60)
        assert flow.returncode != 0
    finally:
        if flow.poll() is None:
            _stop(flow, signal.SIGKILL)
    killed_at = _processed(client, partitions)
    assert killed_at < N, "the flow had processed every event before the kill: nothing was resumed"
    files = forked_snapshots.referenced(recovery_dir(two))  # the shards and gates resume from forked children's files
    assert files and all(os.path.exists(f) for f in files), files
    stray = forked_snapshots.directory_of(two) / "1-1" / "000.snap"  # a fork's file that no snapshot names
    stray.parent.mkdir()
    stray.write_bytes(b"left by a crash between a fork and its close")
    with LiveFlow(two, processes=2):
        assert wait_for(lambda: _processed(client, partitions) >= N, 120, 0.2), runner.read_counters(client, partitions)
        time.sleep(0.5)
    counters = runner.read_counters(client, partitions)
    assert counters["processed"] == N and counters.get("duplicate", 0) == 0, counters
    assert not stray.parent.exists()  # swept by process 0 at its start; the resumed-from files were read
    if partitions > 1:  # every partition's gate took its share
        shares = [float(client.hget(counters_key(p), "processed") or 0) for p in range(partitions)]
        assert all(share > N / (2 * partitions) for share in shares), shares
    got = feature_hashes(two)
    differing = sorted(k for k in set(expected) | set(got) if expected.get(k) != got.get(k))
    assert not differing, f"{len(differing)} keys differ: {describe(two, expected, got, differing)}"
    assert len(expected) > 5_000


def test_a_lowered_partition_count_reads_what_the_higher_partitions_hold(feast_applied, tmp_path):
    """PANTRY_STREAM_PARTITIONS lowered from 3 to 1: the flow still reads partition 2's stream to its end (nothing
    left unread), and with that stream gone it still starts on a recovery store that holds partition 2's state
    (Bytewax refuses a recovered source partition it is not given)."""
    from streaming.sources import live_partitions

    settings = isolated(feast_applied, tmp_path, 6)
    client = sync_client(settings)
    rng, heavy = random.Random(3), [0]
    evs = [e for e in (_event(rng, i, BASE + timedelta(seconds=i), heavy) for i in range(400))
           if partition_of(e.customer_id, None, 3) == 2][:50]
    for e in evs:
        client.xadd(events_stream(2), {EVENT_FIELD: events.encode_msgpack(e)})
    assert live_partitions(settings) == 3
    with LiveFlow(settings):
        assert wait_for(lambda: _processed(client, 3) >= len(evs), 90, 0.1), runner.read_counters(client, 3)
    assert float(client.hget(counters_key(2), "processed") or 0) == len(evs)
    client.delete(events_stream(2))
    assert live_partitions(settings) == 3  # its state is in the recovery store
    with LiveFlow(settings):
        e = _event(rng, 10_000, BASE + timedelta(seconds=500), heavy)
        client.xadd(events_stream(0), {EVENT_FIELD: events.encode_msgpack(e)})
        assert wait_for(lambda: _processed(client, 3) >= len(evs) + 1, 60, 0.1), runner.read_counters(client, 3)
