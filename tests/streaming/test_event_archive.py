"""The event archive (pantry/event_archive.py, streaming/event_archive.py): every event type as a row of the wide
table; one row per event_id on read; retention by event day; and on the real parts: events posted through
POST /v1/events with the live flow running land in the archive, a SIGKILLed flow loses none of them once restarted,
an erasure removes a customer's rows."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import httpx
import msgspec
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pantry import event_archive
from pantry import events as E
from pantry.redis_server import sync_client
from pantry.settings import Settings, subprocess_env
from streaming import runner
from streaming.event_archive import EventArchive, archive_batch
from streaming.features.event import from_event

T0 = datetime(2018, 1, 2, 10, tzinfo=UTC)


def one_of_each(prefix: str, t: datetime, customer_id: int = 990_201) -> list[E.Event]:
    c, s = customer_id, 77
    return [
        E.Purchase(event_id=f"{prefix}-purchase", ts=t, customer_id=c, store_id=s, basket_id=5, product_id=9_001,
                   quantity=2, sales_value=3.5, discounts=0.25, decision_id="d-1"),
        E.AddToCart(event_id=f"{prefix}-add", ts=t, customer_id=c, store_id=s, product_id=9_002, quantity=3),
        E.RemoveFromCart(event_id=f"{prefix}-remove", ts=t, customer_id=c, store_id=s, product_id=9_002),
        E.ProductView(event_id=f"{prefix}-view", ts=t, customer_id=c, product_id=9_003),
        E.Inventory(event_id=f"{prefix}-inventory", ts=t, store_id=s, product_id=9_001, on_hand=0),
        E.CouponRedemption(event_id=f"{prefix}-coupon", ts=t, customer_id=c, coupon_upc=51_000, campaign_id=13),
        E.SubstitutionFeedback(event_id=f"{prefix}-substitution", ts=t, customer_id=c, store_id=s,
                               original_product_id=9_001, substitute_product_id=9_004, accepted=False,
                               decision_id="d-2"),
        E.Impression(event_id=f"{prefix}-impression", ts=t, customer_id=c, decision_id="d-1", product_id=9_001),
        E.Click(event_id=f"{prefix}-click", ts=t, customer_id=c, decision_id="d-1", product_id=9_001),
    ]


def test_every_field_of_every_event_type_is_a_column_with_its_value():
    fields = {f.name for cls in E.EVENT_TYPES for f in msgspec.structs.fields(cls)}
    assert fields | {"type", "accepted_at"} == set(event_archive.ARCHIVE_SCHEMA.names)
    evs = one_of_each("x", T0)
    rows = {r["type"]: r for r in archive_batch([(T0.timestamp() + 5, [from_event(e) for e in evs])]).to_pylist()}
    assert set(rows) == set(E.TYPE_NAMES)
    for e in evs:  # what the event has, the row has; what it has not, is null
        row = rows[type(e).__struct_config__.tag]
        for name in event_archive.ARCHIVE_SCHEMA.names:
            expected = {"type": row["type"], "accepted_at": T0 + timedelta(seconds=5)}.get(name, getattr(e, name, None))
            assert row[name] == expected, (row["type"], name)


def test_read_keeps_the_first_accepted_row_of_an_event_before_until_and_retention_drops_old_days(tmp_path):
    settings = Settings(data_dir=tmp_path, event_archive_retention_days=4)
    archive = EventArchive(settings, "test")
    first, again = [from_event(e) for e in one_of_each("a", T0)], [from_event(one_of_each("a", T0)[0])]
    archive.append(T0.timestamp() + 1, first)
    archive.append(T0.timestamp() + 9, again)  # the same purchase again (a restart re-processed it)
    archive.append(T0.timestamp() + 9, [from_event(e) for e in one_of_each("b", T0 + timedelta(days=1))])
    archive.flush()
    root = settings.event_archive_dir
    assert sum(pq.read_metadata(p).num_rows for p in event_archive.files(root)) == 19
    got = event_archive.read(root)
    assert got.num_rows == 18 and len(set(got.column("event_id").to_pylist())) == 18
    purchase = event_archive.read(root, types=["purchase"], until=T0 + timedelta(hours=1)).to_pylist()
    assert [(r["event_id"], r["accepted_at"]) for r in purchase] == [("a-purchase", T0 + timedelta(seconds=1))]
    assert event_archive.read(root, until=T0).num_rows == 0  # strictly before `until`
    assert event_archive.last_event_ts(root) == T0 + timedelta(days=1)
    assert event_archive.digest(root, T0 + timedelta(hours=1)) != event_archive.digest(root)
    archive.append(T0.timestamp(), [from_event(one_of_each("c", T0 + timedelta(days=5))[0])])
    archive.close()  # the newest day is now T0 + 5 days: only T0's day is more than 4 days before it
    assert [d.name for d in event_archive.day_dirs(root)] == ["2018-01-03", "2018-01-07"]


def test_a_day_is_compacted_into_one_file_once_the_events_reach_the_next(tmp_path):
    settings = Settings(data_dir=tmp_path)
    archive = EventArchive(settings, "test")
    root = settings.event_archive_dir
    for i in range(3):  # three writes of the same day, the last one repeating the first (a restart)
        archive.append(T0.timestamp() + i, [from_event(e) for e in one_of_each(f"w{i % 2}", T0 + timedelta(hours=i))])
        archive.flush()
    day = root / "2018-01-02"
    assert len(list(day.glob("part-*.parquet"))) == 3
    before = event_archive.read(root)
    archive.append(T0.timestamp() + 5, [from_event(one_of_each("next", T0 + timedelta(days=1))[0])])
    archive.close()  # a flush waits for the files; the compaction comes after them, done by the thread's end
    (only,) = day.glob("part-*.parquet")
    assert only.name.endswith(event_archive.COMPACTED) and pq.read_metadata(only).num_rows == 18
    assert event_archive.read(root).num_rows == before.num_rows + 1
    assert event_archive.read(root, until=T0 + timedelta(days=1)).equals(before)
    assert len(list((root / "2018-01-03").glob("part-*.parquet"))) == 1  # the newest day is left as it is


# ---- on the real parts: the API, the live flow in its own process, the erasure --------------------------------


class Flow:
    """`pantry stream live` in a process of its own (so that it can be SIGKILLed), snapshots every second."""

    def __init__(self, settings: Settings, log_dir):
        env = {**subprocess_env(settings), "PANTRY_STREAM_SNAPSHOT_S": "1", "PANTRY_CLOCK": settings.clock}
        self.log = open(os.path.join(log_dir, f"flow-{time.time_ns()}.log"), "w")  # noqa: SIM115
        self.process = subprocess.Popen([sys.executable, "-m", "pantry.cli", "stream", "live", "--no-progress"],
                                        env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM (a clean stop: the archive writes what it holds) unless it is dead already."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)
            assert self.process.returncode == 0, self.process.returncode
        self.log.close()


def wait_for(predicate, timeout_s: float, every_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()) and time.monotonic() < deadline:
        time.sleep(every_s)
    return value


@pytest.fixture(scope="module")
def world(feast_applied, tmp_path_factory):
    """Own data dir (the data set and registry shared), own artifacts, own Redis db; a server on them."""
    from tests.serving.conftest import start_server
    from tests.streaming.test_recovery import isolated

    root = tmp_path_factory.mktemp("archive")
    settings = msgspec.structs.replace(isolated(feast_applied, root, 12), artifacts_dir=root / "artifacts")
    server = start_server(settings, str(root))
    yield settings, server, root
    server.stop()


def processed(settings: Settings) -> int:
    return int(runner.read_counters(sync_client(settings)).get("processed", 0))


def post(http: httpx.Client, evs: list[E.Event]) -> dict:
    response = http.post("/v1/events", json={"events": [E.to_builtins(e) for e in evs]})
    assert response.status_code == 202, response.text
    return response.json()


def test_posted_events_land_in_the_archive_once_and_a_killed_flow_loses_none(world, api_keys):
    settings, server, root = world
    root_dir = settings.event_archive_dir
    with httpx.Client(base_url=server.url, timeout=10.0, headers=api_keys.headers("data")) as http:
        flow = Flow(settings, root)
        try:
            first = one_of_each("api", T0)
            assert post(http, first) == {"accepted": 9, "duplicate": False}
            assert post(http, first)["duplicate"] is True  # the same batch: written once
            post(http, [first[0], first[3]])  # the same events in another batch: the gate drops them
            assert wait_for(lambda: processed(settings) >= 9, 60), "live flow never processed the events"
            # a snapshot (every second) has written what the flow accepted
            assert wait_for(lambda: event_archive.read(root_dir).num_rows == 9, 10)
            table = event_archive.read(root_dir)
            assert table.schema == event_archive.ARCHIVE_SCHEMA
            assert sorted(table.column("event_id").to_pylist()) == sorted(e.event_id for e in first)
            sub = table.filter(pc.equal(table.column("type"), "substitution_feedback")).to_pylist()[0]
            assert (sub["original_product_id"], sub["substitute_product_id"], sub["accepted"]) == (9_001, 9_004, False)
            assert all(r["accepted_at"] > datetime.now(UTC) - timedelta(minutes=5) for r in table.to_pylist())

            # a crash: batch A committed by a snapshot, batch B processed, then SIGKILL before any write of B
            a = one_of_each("crash-a", T0 + timedelta(minutes=1))
            post(http, a)
            assert wait_for(lambda: processed(settings) >= 18, 30)
            time.sleep(2.5)  # at least one snapshot after A (its epoch committed: A must be in files)
            b = one_of_each("crash-b", T0 + timedelta(minutes=2))
            post(http, b)
            assert wait_for(lambda: processed(settings) >= 27, 30)
            flow.kill()
        finally:
            flow.stop()
        flow = Flow(settings, root)  # resumes from the last committed snapshot
        try:
            c = one_of_each("crash-c", T0 + timedelta(minutes=3))
            post(http, c)
            want = {e.event_id for e in first + a + b + c}
            assert wait_for(lambda: set(event_archive.read(root_dir).column("event_id").to_pylist()) == want, 60), \
                want - set(event_archive.read(root_dir).column("event_id").to_pylist())
        finally:
            flow.stop()
    got = event_archive.read(root_dir)
    assert got.num_rows == len(want) == 36  # one row per event, whatever the files hold twice
    assert sum(pq.read_metadata(p).num_rows for p in event_archive.files(root_dir)) >= 36


def test_erasure_removes_the_customers_archived_rows(world, api_keys):
    settings, server, root = world
    root_dir = settings.event_archive_dir
    gone, kept = 990_301, 990_302
    with httpx.Client(base_url=server.url, timeout=30.0, headers=api_keys.headers("data")) as http:
        flow = Flow(settings, root)
        try:
            t = T0 + timedelta(minutes=4)
            post(http, one_of_each("erase-gone", t, gone) + one_of_each("erase-kept", t, kept))

            def customers():
                return event_archive.read(root_dir, columns=["customer_id"]).column(0).to_pylist()

            assert wait_for(lambda: gone in customers() and kept in customers(), 60)
            r = http.post(f"/admin/customers/{gone}/forget", headers=api_keys.headers("admin"))
            assert r.status_code == 200, r.text
            assert r.json()["removed"]["archive_rows"] == 8  # all of its events but the inventory (no customer)
        finally:
            flow.stop()
    assert gone not in customers() and customers().count(kept) == 8
