"""At-least-once recovery and scaling give exactly the uninterrupted answer: SIGKILL the replay mid-way, resume
from the Bytewax recovery store, and compare every Feast key of every stream view with an uninterrupted run;
and 2 workers give the same result as 1."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pantry.redis_server import sync_client
from pantry.settings import Settings, from_env
from streaming import runner

UNTIL = datetime(2017, 10, 1, tzinfo=UTC)


def isolated(base: Settings, root: Path, db: int) -> Settings:
    """Own data dir (sharing the dataset and the Feast registry) and own Redis db, emptied."""
    data = root / f"db{db}"
    data.mkdir(parents=True)
    (data / "data").symlink_to(base.dataset_dir)
    shutil.copy(base.registry_path, data / "registry.db")
    env = {**os.environ, "PANTRY_DATA_DIR": str(data), "REDIS_URL": f"redis://127.0.0.1:{base.embedded_redis_port}/{db}"}
    settings = from_env(env)
    sync_client(settings).flushdb()
    return settings


def env_of(settings: Settings) -> dict[str, str]:
    return {**os.environ, "PANTRY_DATA_DIR": str(settings.data_dir), "REDIS_URL": settings.effective_redis_url(),
            "PANTRY_STREAM_SNAPSHOT_S": "0.5"}


def feature_hashes(settings: Settings) -> dict[bytes, dict[bytes, bytes]]:
    client = sync_client(settings)
    keys = [k for k in client.scan_iter(count=5000) if not k.startswith(b"pantry:")]
    pipe = client.pipeline(transaction=False)
    for k in keys:
        pipe.hgetall(k)
    return dict(zip(keys, pipe.execute(), strict=True))


def describe(settings: Settings, expected: dict, got: dict, keys: list[bytes]) -> str:
    """The differing fields of a few keys, decoded, for the failure message."""
    from pantry.featurestore import repo
    from pantry.featurestore.layout import feature_field, ts_field
    from pantry.featurestore.values import decode_timestamp as decode_ts
    from pantry.featurestore.values import decode_value

    layout = repo.layout(settings)
    names = {feature_field(v, f.name): f"{v}:{f.name}" for v, s in layout.views.items() for f in s.features}
    names.update({ts_field(v): f"_ts:{v}" for v in layout.views})
    out = []
    for k in keys[:3]:
        a, b = expected[k], got.get(k) or {}
        for field in sorted(set(a) | set(b)):
            if a.get(field) != b.get(field):
                dec = decode_ts if field.startswith(b"_ts") else decode_value
                out.append(f"{names.get(field, field)}: {dec(a.get(field))} != {dec(b.get(field))}")
    return "; ".join(out)


def quiet_replay(settings: Settings, workers: int = 1, processes: int = 1) -> None:
    runner.replay(settings, UNTIL, None, workers, force=False, progress=False, echo=lambda _: None,
                  processes=processes)


@pytest.fixture(scope="module")
def uninterrupted(feast_applied, tmp_path_factory):
    settings = isolated(feast_applied, tmp_path_factory.mktemp("recovery"), 3)
    quiet_replay(settings)
    return feature_hashes(settings), runner.read_counters(sync_client(settings))


def test_sigkill_mid_replay_then_resume_equals_uninterrupted(feast_applied, uninterrupted, tmp_path):
    expected, expected_counters = uninterrupted
    settings = isolated(feast_applied, tmp_path, 4)
    total = runner.count_events(settings, UNTIL)
    # paced so the kill lands mid-way: the 9 months take ~10 s of wall time
    speed = (UNTIL - datetime(2017, 1, 1, tzinfo=UTC)).total_seconds() / 10
    proc = subprocess.Popen(
        [sys.executable, "-m", "pantry.cli", "stream", "replay", "--until", UNTIL.date().isoformat(),
         "--speed", str(speed), "--no-progress"],
        env=env_of(settings), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    client = sync_client(settings)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            done = runner.read_counters(client).get("processed", 0)
            if done > 0.4 * total:
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"replay ended before the kill: {proc.stderr.read().decode()[-2000:]}"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_at = runner.read_counters(client)["processed"]
    assert 0 < killed_at < total
    assert runner.read_record(settings) is None  # never completed

    quiet_replay(settings)  # resumes from the recovery store
    got = feature_hashes(settings)
    assert len(got) == len(expected) > 100
    differing = [k for k in expected if got.get(k) != expected[k]]
    assert differing == [], f"{len(differing)} of {len(expected)} keys differ: " + describe(
        settings, expected, got, differing)
    assert runner.read_counters(client)["processed"] == expected_counters["processed"]


def test_two_workers_equal_one(feast_applied, uninterrupted, tmp_path):
    expected, _ = uninterrupted
    settings = isolated(feast_applied, tmp_path, 5)
    quiet_replay(settings, workers=2)
    got = feature_hashes(settings)
    differing = [k for k in expected if got.get(k) != expected[k]]
    assert len(got) == len(expected)
    assert differing == [], f"{len(differing)} of {len(expected)} keys differ"


def test_two_processes_equal_one(feast_applied, uninterrupted, tmp_path):
    expected, expected_counters = uninterrupted
    settings = isolated(feast_applied, tmp_path, 6)
    quiet_replay(settings, processes=2)
    got = feature_hashes(settings)
    differing = [k for k in expected if got.get(k) != expected[k]]
    assert len(got) == len(expected)
    assert differing == [], f"{len(differing)} of {len(expected)} keys differ"
    assert runner.read_counters(sync_client(settings))["processed"] == expected_counters["processed"]
    # both processes wrote their share of the offline log (file names carry the worker index)
    parts = {p.name.split("-")[2] for p in settings.feature_log_dir.rglob("part-*.parquet")}
    assert parts == {"0", "1"}, parts
    # and their share of the snapshots: a recovery partition per worker, each holding some (read by a child: two
    # SQLite libraries in one process break each other's locks, streaming/retention.py)
    count = ("import glob, json, sqlite3, sys; print(json.dumps([sqlite3.connect(db).execute("
             "'SELECT COUNT(*) FROM snaps').fetchone()[0] "
             "for db in sorted(glob.glob(sys.argv[1] + '/part-*.sqlite3'))]))")
    out = subprocess.run([sys.executable, "-c", count, str(runner.recovery_dir(settings))], capture_output=True,
                         text=True, check=True).stdout
    snaps = json.loads(out)
    assert len(snaps) == 2 and min(snaps) > 0, snaps


def test_online_writes_deferred_to_the_end_equal_writing_every_flush(feast_applied, uninterrupted, tmp_path):
    """An unpaced replay writes the online store once per entity at its end; writing every flush's rows as it
    goes (what a paced replay does) ends in the same store."""
    from streaming.dataflow import StreamConfig

    expected, _ = uninterrupted
    settings = isolated(feast_applied, tmp_path, 7)
    config = StreamConfig(mode="replay", until=UNTIL, flush_s=0.2, defer_online=False)
    runner.run_flow(settings, config, workers=1)
    got = feature_hashes(settings)
    differing = [k for k in expected if got.get(k) != expected[k]]
    assert len(got) == len(expected)
    assert differing == [], f"{len(differing)} of {len(expected)} keys differ: " + describe(
        settings, expected, got, differing)


def test_the_live_summary_counts_this_run_not_the_states_whole_history():
    before = {"processed": 1_494_427.0, "duplicate": 2.0, "late": 0.0, "invalid": 1.0}
    after = {"processed": 1_526_177.0, "duplicate": 5.0, "late": 0.0, "invalid": 1.0, "max_event_ts": 1_514_779_343.0}
    line = runner.summary(after, 79.3, "live", before)
    assert line.startswith("live: 31,750 events processed in 79.3s (400/s overall), 3 duplicate, 0 late, 0 invalid")
    assert runner.summary(after, 79.3, "live").startswith("live: 1,526,177 events processed")  # nothing subtracted
