"""The outcome join in the real live flow (`pantry stream live`, a subprocess): decisions XADDed to pantry:decisions
as serving writes them and impressions to pantry:events are counted per KPI key; a SIGKILL shortly after the last
event and a resume from the recovery store give the same totals in Redis (nothing counted twice)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

from pantry import events
from pantry.keys import DECISIONS_STREAM, EVENT_FIELD, EVENTS_STREAM, KPI_PREFIX, LIVE_HEARTBEAT
from pantry.kpis import KPI_HASHES, KpiKey, merge_shards
from pantry.redis_server import sync_client
from tests.streaming.test_live import wait_for
from tests.streaming.test_outcomes import entry, recs
from tests.streaming.test_recovery import env_of, isolated

T = datetime(2017, 12, 1, tzinfo=UTC)


def test_a_killed_live_flow_resumes_to_the_same_kpi_totals(feast_applied, tmp_path):
    settings = isolated(feast_applied, tmp_path, 5)
    client = sync_client(settings)
    env = {**env_of(settings), "PANTRY_KPI_FLUSH_S": "0.1", "PANTRY_CLOCK": "event"}
    log_path = tmp_path / "flow.log"

    def start() -> subprocess.Popen:
        client.delete(LIVE_HEARTBEAT)
        with open(log_path, "a") as log:
            proc = subprocess.Popen([sys.executable, "-m", "pantry.cli", "stream", "live", "--no-progress"], env=env,
                                    stdout=log, stderr=subprocess.STDOUT)
        assert wait_for(lambda: client.exists(LIVE_HEARTBEAT) or proc.poll() is not None, 90, 0.1)
        assert proc.poll() is None, log_path.read_text()[-3000:]
        return proc

    def hashes() -> dict:
        return {k: client.hgetall(k) for k in sorted(client.scan_iter(f"{KPI_PREFIX}o*"))}

    def impressions() -> int:
        return sum(c.impressions for c in merge_shards(client.hgetall(k) for k in KPI_HASHES).values())

    proc = start()
    try:
        for i in range(40):
            did, cid, ts = f"d{i}", 100 + i, T + timedelta(seconds=i)
            client.xadd(DECISIONS_STREAM, entry(did, recs(1, 2, 3), now=ts, customer=cid, version=f"v{i % 2}"))
            for pid in (1, 2, 3, 1):  # the last: a second impression of (decision, 1), counted once
                e = events.Impression(event_id=f"{did}-{pid}-{time.time_ns()}", ts=ts, customer_id=cid,
                                      decision_id=did, product_id=pid)
                client.xadd(EVENTS_STREAM, {EVENT_FIELD: events.encode_msgpack(e)})
            time.sleep(0.02)
        assert wait_for(lambda: impressions() == 120, 5.0), impressions()
        before = hashes()
        proc.send_signal(signal.SIGKILL)  # snapshots every 0.5 s: the last events are after the last one
        proc.wait(timeout=30)
        proc = start()
        time.sleep(2.0)  # the resumed flow reads what came after its snapshot again and writes every key
        assert hashes() == before
        totals = merge_shards(client.hgetall(k) for k in KPI_HASHES)
        v0 = totals[KpiKey("2017-12-01", "recommender", "v0", surface="for_you")]
        assert (v0.decisions, v0.impressions, v0.clicks) == (20, 60, 0)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
