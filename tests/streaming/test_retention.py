"""Bounded pantry:events: the live flow trims the stream to what its committed recovery snapshots still need (plus
the margins), and a flow SIGKILLed after a trim and restarted still reaches exactly the features of an
uninterrupted flow. Dead letters: payload cut, reason whole, bounded by age."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from pantry import dataset, events
from pantry.featurestore.layout import ts_field
from pantry.keys import DEAD_LETTER_STREAM, EVENT_FIELD, EVENTS_STREAM
from pantry.redis_server import sync_client
from streaming import retention, runner
from streaming.sinks import dead_letter_fields, trim_by_age
from tests.streaming import test_live
from tests.streaming.test_recovery import feature_hashes, isolated

MARGIN_EVENTS = 5
CUSTOMERS = (991_001, 991_002, 991_003)


def bounded(settings):
    return msgspec.structs.replace(settings, stream_snapshot_s=0.5, stream_trim_every_s=0.2,
                                   stream_retention_margin_s=0.0, stream_retention_margin_events=MARGIN_EVENTS)


def env_of(settings) -> dict[str, str]:
    return {**os.environ, "PANTRY_DATA_DIR": str(settings.data_dir), "REDIS_URL": settings.effective_redis_url(),
            "PANTRY_STREAM_SNAPSHOT_S": "0.5", "PANTRY_STREAM_TRIM_EVERY_S": "0.2",
            "PANTRY_STREAM_RETENTION_MARGIN_S": "0", "PANTRY_STREAM_RETENTION_MARGIN_EVENTS": str(MARGIN_EVENTS)}


def make_events(settings, n: int, first: int) -> list[events.Event]:
    base = datetime.fromisoformat(dataset.manifest(settings).last_event).astimezone(UTC) + timedelta(days=2)
    out: list[events.Event] = []
    for i in range(first, first + n):
        cid = CUSTOMERS[i % len(CUSTOMERS)]
        ts = base + timedelta(seconds=10 * i)
        if i % 4 == 3:
            out.append(events.Purchase(event_id=f"ret-{i}", ts=ts, customer_id=cid, store_id=991, basket_id=i // 4,
                                       product_id=9_910_000 + i % 7, quantity=1, sales_value=1.5))
        elif i % 4 == 1:  # substitution feedback: its state (customer and original product) is recovered too
            out.append(events.SubstitutionFeedback(event_id=f"ret-{i}", ts=ts, customer_id=cid, store_id=991,
                                                   original_product_id=9_910_000 + i % 7,
                                                   substitute_product_id=9_920_000 + i % 5, accepted=i % 3 != 0))
        else:
            out.append(events.ProductView(event_id=f"ret-{i}", ts=ts, customer_id=cid, product_id=9_910_000 + i % 7))
    return out


def xadd(client, evs) -> None:
    pipe = client.pipeline(transaction=False)
    for e in evs:
        pipe.xadd(EVENTS_STREAM, {EVENT_FIELD: events.encode_msgpack(e)})
    pipe.execute()


wait_for = test_live.wait_for


def processed(client) -> float:
    return runner.read_counters(client).get("processed", 0)


class LiveFlow(test_live.LiveFlow):
    """The live flow in a thread of this process; at exit it must have stopped cleanly."""

    def __exit__(self, *exc):
        super().__exit__(*exc)
        assert not self.thread.is_alive() and self.error is None, self.error


def live_process(settings, workers: int = 2) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pantry.cli", "stream", "live", "--workers", str(workers),
                             "--no-progress"], env=env_of(settings), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def why_not(proc: subprocess.Popen, client) -> str:
    """The flow's counters while it runs; once it has died, its stderr with the root cause (the first
    exception of a chain) kept."""
    if proc.poll() is None:
        return str(runner.read_counters(client))
    err = proc.stderr.read().decode()
    return err if len(err) <= 6000 else f"{err[:4000]}\n[...]\n{err[-2000:]}"


@pytest.fixture(scope="module")
def reference(feast_applied, tmp_path_factory):
    """Every event through one uninterrupted live flow (never trimmed below what it needs, either)."""
    settings = bounded(isolated(feast_applied, tmp_path_factory.mktemp("retention"), 9))
    client = sync_client(settings)
    with LiveFlow(settings):
        xadd(client, make_events(settings, 301, 0))
        assert wait_for(lambda: processed(client) == 301, 60), runner.read_counters(client)
        time.sleep(1.0)  # the last flush
    return feature_hashes(settings)


def test_live_flow_trims_to_its_snapshot_and_a_killed_flow_still_reaches_the_same_features(
        feast_applied, reference, tmp_path):
    settings = bounded(isolated(feast_applied, tmp_path, 10))
    client = sync_client(settings)
    proc = live_process(settings)
    try:
        xadd(client, make_events(settings, 200, 0))
        assert wait_for(lambda: processed(client) == 200, 90), why_not(proc, client)
        # processed, snapshotted, trimmed: what is left is the margin and the entries after the resume floor
        assert wait_for(lambda: client.xlen(EVENTS_STREAM) <= MARGIN_EVENTS + 1, 30), client.xlen(EVENTS_STREAM)
        floor = retention.resume_floor(retention.recovery_dir(settings))
        assert floor is not None
        oldest = client.xrange(EVENTS_STREAM, count=1)[0][0].decode()
        assert retention._key(oldest) <= retention._key(floor)  # nothing the flow could resume after is gone
        # more events, and a SIGKILL before the next snapshot can cover them all
        xadd(client, make_events(settings, 100, 200))
        time.sleep(0.15)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    proc = live_process(settings)
    try:
        # One more event, then exactly 301 processed: the restarted flow resumed from its snapshot's counters and
        # read every entry after it again (an entry trimmed too early would leave the count short).
        xadd(client, make_events(settings, 1, 300))
        assert wait_for(lambda: processed(client) == 301, 120), runner.read_counters(client)
        time.sleep(1.5)  # the restarted flow's last flush
        got = feature_hashes(settings)
        assert len(got) == len(reference) > 5
        feedback_ts = {ts_field(v) for v in ("customer_substitution_feedback", "product_substitution_feedback")}
        assert sum(bool(feedback_ts & set(fields)) for fields in reference.values()) == len(CUSTOMERS) + 7
        differing = [k for k in reference if got.get(k) != reference[k]]
        assert differing == [], f"{len(differing)} of {len(reference)} keys differ after the kill and restart"
        assert wait_for(lambda: client.xlen(EVENTS_STREAM) <= MARGIN_EVENTS + 1, 30), client.xlen(EVENTS_STREAM)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_trim_keeps_the_time_margin_and_never_passes_the_floor(feast_applied, tmp_path, monkeypatch):
    settings = isolated(feast_applied, tmp_path, 11)
    client = sync_client(settings)
    ids = [client.xadd(EVENTS_STREAM, {EVENT_FIELD: b"x"}, id=f"{1_000_000 + 1000 * i}-0").decode() for i in range(50)]
    floor = ids[30]
    for page in (5_000, 7, 2, 1):  # the walk back to the entry margin reads pages: any size, the same points
        monkeypatch.setattr(retention, "TRIM_PAGE", page)
        # 10 s of time margin reaches back 10 entries; 3 entries of count margin fewer: time wins (keeps more)
        assert retention.trim_point(client, floor, margin_s=10.0, margin_events=3) == ids[20]
        # 40 entries of count margin: count wins
        assert retention.trim_point(client, floor, margin_s=10.0, margin_events=25) == ids[5]
        # exactly as many entries as the margin: the oldest is the point; one more than there are: nothing
        assert retention.trim_point(client, floor, margin_s=0.0, margin_events=30) == ids[0]
        assert retention.trim_point(client, floor, margin_s=0.0, margin_events=31) == "0-0"
        # more margin than entries: nothing to trim
        assert retention.trim_point(client, floor, margin_s=0.0, margin_events=100) == "0-0"
    # no snapshot at all: the flow would start from the beginning, nothing is trimmed
    assert retention.trim_events(client, settings, tmp_path / "no-recovery") == 0
    assert client.xlen(EVENTS_STREAM) == 50


def test_dead_letters_keep_the_reason_whole_cut_the_payload_and_expire(feast_applied, tmp_path):
    settings = isolated(feast_applied, tmp_path, 12)
    client = sync_client(settings)
    reason = "invalid: " + "r" * 500
    fields = dead_letter_fields(reason, b"p" * 5000, 64)
    assert fields[b"reason"] == reason.encode() and fields[b"e"] == b"p" * 64 and fields[b"size"] == b"5000"
    assert b"size" not in dead_letter_fields("late", b"short", 64)
    seconds, _ = client.time()
    old = f"{(int(seconds) - 3600) * 1000}-0"
    client.xadd(DEAD_LETTER_STREAM, fields, id=old)
    client.xadd(DEAD_LETTER_STREAM, fields)
    assert client.xlen(DEAD_LETTER_STREAM) == 2
    trim_by_age(client, DEAD_LETTER_STREAM, retention_s=600)  # MINID ~ (whole macro nodes): may keep it
    assert trim_by_age(client, DEAD_LETTER_STREAM, retention_s=600, approximate=False) in (0, 1)
    assert [e[0].decode() for e in client.xrange(DEAD_LETTER_STREAM)] != [old]
    assert client.xlen(DEAD_LETTER_STREAM) == 1
    assert client.xrange(DEAD_LETTER_STREAM)[0][0].decode() != old


def test_forget_while_the_live_flow_runs_drops_the_flow_state(feast_applied, tmp_path):
    """The erasure's marker in pantry:events makes the customer's shard drop its state: later refreshes and flushes
    never write the erased customer's rows again, and a later event starts a new profile."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from pantry import erasure
    from pantry.featurestore import repo
    from pantry.featurestore.layout import ts_field

    settings = bounded(isolated(feast_applied, tmp_path, 13))
    client = sync_client(settings)
    layout = repo.layout(settings)
    erased, kept = CUSTOMERS[0], CUSTOMERS[1]
    evs = make_events(settings, 60, 0)
    with LiveFlow(settings):
        xadd(client, evs)
        assert wait_for(lambda: processed(client) == 60, 90), runner.read_counters(client)
        assert wait_for(lambda: client.exists(layout.key("customer_session", (erased,))), 5)
        counts = erasure.forget(settings, erased, "test", client=client, layout=layout)
        assert counts["flow_state"] == 1 and counts["online_rows"] >= 2, counts
        assert runner.read_counters(client)["forgotten"] == 1
        # more events of the other customers (flushes) and a refresh period (rolls): nothing of the erased comes back
        xadd(client, [e for e in make_events(settings, 30, 60) if e.customer_id != erased])
        time.sleep(6.0)
        assert not client.exists(layout.key("customer_session", (erased,)))
        assert client.exists(layout.key("customer_session", (kept,)))
        # a new event: a new profile, with nothing of the erased one
        last = evs[-1].ts + timedelta(minutes=20)
        xadd(client, [events.ProductView(event_id="ret-new", ts=last, customer_id=erased, product_id=9_910_001)])
        session_events = layout.views["customer_session"].feature_names.index("session_events")

        def new_session() -> int | None:
            row = client.hmget(layout.key("customer_session", (erased,)), layout.fields("customer_session"))
            values, _ = layout.decode_row("customer_session", row)
            return values and values["session_events"]

        assert wait_for(lambda: new_session() == 1, 5), new_session()
        assert session_events >= 0
        assert client.hexists(layout.key("customer_session", (erased,)), ts_field("customer_session"))
    # the feature log (closed with the flow) holds no row of the erased customer from before the new event
    old_rows = 0
    for path in settings.feature_log_dir.rglob("part-*.parquet"):
        table = pq.read_table(path, columns=["customer_id", "event_timestamp"]) \
            if "customer_id" in pq.read_schema(path).names else None
        if table is None:
            continue
        mine = table.filter(pc.equal(table.column("customer_id"), erased))
        old_rows += sum(t < last for t in mine.column("event_timestamp").to_pylist())
    assert old_rows == 0
