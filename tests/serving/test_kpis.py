"""Outcomes joined to decisions, end to end: a real server (trained models) and a real live flow (`pantry stream
live`, a subprocess) on a Redis of their own. A /v1/recommendations answer, then an impression and a click for it
through /v1/events, are counted in /admin/kpis within a second under the answer's version and arm; duplicates count
once; an outcome that comes before its decision still joins; a purchase without decision_id is attributed within
the attribution window and not after it; a SIGKILLed flow resumes to the same totals; the Prometheus gauges and the
daily export show the same figures."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import msgspec
import pyarrow.parquet as pq
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pantry import dataset, events
from pantry.keys import (
    DECISIONS_STREAM,
    EVENT_FIELD,
    EVENTS_STREAM,
    KPI_COUNTERS,
    KPI_PREFIX,
    LIVE_HEARTBEAT,
    WATERMARK,
)
from pantry.redis_server import sync_client
from pantry.settings import Settings, subprocess_env
from tests.serving.conftest import Server, keyed_client, start_server
from tests.streaming.test_live import wait_for
from tests.streaming.test_outcomes import entry, recs

# the session fixture trained_models (~3 min on 2 cores) is set up inside the first test that needs it
pytestmark = pytest.mark.timeout(600)

CUSTOMER = 1_000_123  # not in the slice: a cold start, answered by the active recommender's popularity
WINDOW_S = 600.0  # the flow's attribution window in this test


@dataclass
class Loop:
    settings: Settings
    server: Server
    http: httpx.Client  # data key: answers + ingest + metrics
    admin: httpx.Client  # ml_engineer
    flow: subprocess.Popen | None
    log_dir: str
    t0: datetime  # the event clock the test starts from

    def start_flow(self) -> None:
        env = {**subprocess_env(self.settings), "PANTRY_CLOCK": "event", "PANTRY_STREAM_SNAPSHOT_S": "0.5",
               "PANTRY_KPI_ATTRIBUTION_WINDOW_S": str(WINDOW_S)}  # the default flush (0.25 s)
        client = sync_client(self.settings)
        client.delete(LIVE_HEARTBEAT)
        with open(os.path.join(self.log_dir, "flow.log"), "a") as log:
            self.flow = subprocess.Popen([sys.executable, "-m", "pantry.cli", "stream", "live", "--no-progress"],
                                         env=env, stdout=log, stderr=subprocess.STDOUT)
        assert wait_for(lambda: client.exists(LIVE_HEARTBEAT) or self.flow.poll() is not None, 90, 0.2)
        assert self.flow.poll() is None, self.flow_log()

    def kill_flow(self) -> None:
        if self.flow is not None and self.flow.poll() is None:
            self.flow.send_signal(signal.SIGKILL)
            self.flow.wait(timeout=30)

    def flow_log(self) -> str:
        with open(os.path.join(self.log_dir, "flow.log")) as fh:
            return fh.read()[-3000:]

    def post(self, *evs: events.BaseEvent) -> None:
        r = self.http.post("/v1/events", json={"events": [events.to_builtins(e) for e in evs]})
        assert r.status_code == 202, r.text

    def kpis(self, **params) -> list[dict]:
        r = self.admin.get("/admin/kpis", params=params)
        assert r.status_code == 200, r.text
        return r.json()["rows"]

    def row(self, version: str, surface: str = "for_you") -> dict | None:
        rows = [r for r in self.kpis(model="recommender", version=version) if r["surface"] == surface]
        return rows[0] if rows else None

    def stream_counters(self) -> dict:
        return self.admin.get("/admin/kpis").json()["stream"]


@pytest.fixture(scope="module")
def loop(own_settings_module, trained_models, api_keys, tmp_path_factory) -> Iterator[Loop]:
    settings = own_settings_module
    log_dir = str(tmp_path_factory.mktemp("kpi-logs"))
    t0 = datetime.fromisoformat(dataset.manifest(settings).last_event).astimezone(UTC) + timedelta(hours=1)
    sync_client(settings).set(WATERMARK, f"{t0.timestamp():.6f}")  # the event clock: decisions' `now`
    server = start_server(settings, log_dir)
    loop = Loop(settings, server, keyed_client(server.url, api_keys), keyed_client(server.url, api_keys,
                "ml_engineer"), None, log_dir, t0)
    try:
        loop.start_flow()
        yield loop
    finally:
        loop.kill_flow()
        server.stop()


@pytest.fixture(scope="module")
def own_settings_module(feast_applied, tmp_path_factory) -> Iterator[Settings]:
    """An own Redis and data dir (the session's event clock and streams stay untouched)."""
    import shutil

    from pantry.redis_server import EmbeddedRedis, free_port

    root = tmp_path_factory.mktemp("kpis")
    server = EmbeddedRedis(port=free_port(), directory=root / "redis").start()
    data_dir = root / "data"
    data_dir.mkdir()
    shutil.copy(feast_applied.registry_path, data_dir / "registry.db")
    (data_dir / "data").symlink_to(feast_applied.dataset_dir)
    yield msgspec.structs.replace(feast_applied, data_dir=data_dir, embedded_redis_port=server.port)
    server.stop()


def decision_now(loop: Loop, decision_id: str) -> datetime:
    """The decision's `now`, from the decision log (written by the worker's flusher, just after the answer)."""
    client = sync_client(loop.settings)

    def find() -> datetime | None:
        for _, fields in client.xrevrange(DECISIONS_STREAM, count=50):
            if fields[b"decision_id"].decode() == decision_id:
                return datetime.fromisoformat(fields[b"now"].decode().strip('"'))
        return None

    now = wait_for(find, 5.0)
    assert now is not None, f"decision {decision_id} not in the log"
    return now


def differences(before: dict, after: dict) -> list:
    from pantry.kpis import decode_counts

    out = []
    for key in sorted(set(before) | set(after)):
        b, a = before.get(key, {}), after.get(key, {})
        for field in sorted(set(b) | set(a)):
            if b.get(field) != a.get(field):
                was = msgspec.structs.asdict(decode_counts(b[field])) if field in b else {}
                now = msgspec.structs.asdict(decode_counts(a[field])) if field in a else {}
                out.append((key, field, {k: (was.get(k), now.get(k)) for k in set(was) | set(now)
                                         if was.get(k) != now.get(k)}))
    return out


def recommend(loop: Loop) -> dict:
    r = loop.http.post("/v1/recommendations", json={"customer_id": CUSTOMER, "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["items"]) >= 3, body
    return body


def test_an_impression_and_a_click_are_counted_within_a_second_once(loop, trained_models):
    answer = recommend(loop)
    version = answer["model_version"]
    assert version == trained_models[0]  # the active recommender answered (its popularity for a cold start)
    did, first = answer["decision_id"], answer["items"][0]["product_id"]
    now = decision_now(loop, did)
    run = str(time.time_ns())

    def outcome(cls, n: int, **kw):
        return cls(event_id=f"kpi-{run}-{n}", ts=now + timedelta(seconds=30), customer_id=CUSTOMER,
                   decision_id=did, **kw)

    sent = time.monotonic()
    loop.post(outcome(events.Impression, 1, product_id=first), outcome(events.Click, 2, product_id=first))
    got = wait_for(lambda: (row := loop.row(version)) and row["impressions"] == 1 and row["clicks"] == 1, 1.0)
    seen_after = time.monotonic() - sent
    assert got, (loop.row(version), loop.stream_counters(), loop.flow_log())
    row = loop.row(version)
    assert row["decisions"] >= 1 and row["arm"] == "" and row["experiment"] == "" and row["ctr"] == 1.0
    print(f"impression + click visible in /admin/kpis {seen_after * 1000:.0f} ms after the POST")

    # duplicates: the same event_id again (in a batch with another event, so the batch itself is new), and a
    # second impression with a new event_id for the same decision and product; a click on another item counts
    second = answer["items"][1]["product_id"]
    loop.post(outcome(events.Impression, 1, product_id=first), outcome(events.Impression, 3, product_id=first),
              outcome(events.Click, 4, product_id=second))
    assert wait_for(lambda: loop.row(version)["clicks"] == 2, 2.0), loop.row(version)
    row = loop.row(version)
    assert (row["impressions"], row["clicks"]) == (1, 2), row
    assert loop.stream_counters()["duplicate"] >= 1


def test_an_outcome_before_its_decision_still_joins(loop):
    did = f"early-{time.time_ns()}"
    client = sync_client(loop.settings)
    ts = datetime.fromtimestamp(float(client.get(WATERMARK)), UTC)
    impression = events.Impression(event_id=f"{did}-i", ts=ts, customer_id=CUSTOMER, decision_id=did,
                                   product_id=77)
    client.xadd(EVENTS_STREAM, {EVENT_FIELD: events.encode_msgpack(impression)})
    assert wait_for(lambda: loop.stream_counters().get("pending", 0) >= 1, 2.0), loop.stream_counters()
    client.xadd(DECISIONS_STREAM, entry(did, recs(77), version="early-v", now=ts, customer=CUSTOMER,
                                        arm="treatment", experiment="exp-early"))
    got = wait_for(lambda: (row := loop.row("early-v")) and row["impressions"] == 1, 2.0)
    assert got, (loop.kpis(), loop.stream_counters())
    assert loop.row("early-v")["arm"] == "treatment" and loop.kpis(experiment="exp-early")


def test_a_purchase_without_decision_id_is_attributed_within_the_window_only(loop):
    answer = recommend(loop)
    version, did = answer["model_version"], answer["decision_id"]
    shown = answer["items"][2]["product_id"]
    now = decision_now(loop, did)
    before = loop.row(version)
    run = str(time.time_ns())

    def purchase(n: int, after_s: float, value: float):
        return events.Purchase(event_id=f"buy-{run}-{n}", ts=now + timedelta(seconds=after_s), customer_id=CUSTOMER,
                               basket_id=n, product_id=shown, sales_value=value)

    loop.post(purchase(1, WINDOW_S / 2, 3.25))
    assert wait_for(lambda: loop.row(version)["purchases"] == before["purchases"] + 1, 2.0), loop.row(version)
    unmatched = loop.stream_counters()["unmatched"]
    loop.post(purchase(2, WINDOW_S + 60, 5.0))  # past the window: the decision is not credited
    assert wait_for(lambda: loop.stream_counters()["unmatched"] == unmatched + 1, 2.0), loop.stream_counters()
    row = loop.row(version)
    assert row["purchases"] == before["purchases"] + 1
    assert row["revenue"] == pytest.approx(before["revenue"] + 3.25)
    assert row["converted"] == before["converted"] + 1


def test_a_killed_flow_resumes_to_the_same_totals_and_the_gauges_and_export_agree(loop):
    client = sync_client(loop.settings)

    def hashes() -> dict:
        return {k: client.hgetall(k) for k in sorted(client.scan_iter(f"{KPI_PREFIX}o*"))}

    answer = recommend(loop)
    did, version = answer["decision_id"], answer["model_version"]
    now = decision_now(loop, did)
    assert wait_for(lambda: loop.row(version), 2.0), loop.kpis()  # the decision is counted (run alone: the first)
    impressions = loop.row(version)["impressions"]
    shown = {item["product_id"] for item in answer["items"]}
    loop.post(*[events.Impression(event_id=f"kill-{did}-{pid}", ts=now, customer_id=CUSTOMER, decision_id=did,
                                  product_id=pid) for pid in shown])
    assert wait_for(lambda: loop.row(version)["impressions"] == impressions + len(shown), 2.0), loop.row(version)
    time.sleep(0.3)  # the flush after the one that showed them (every shard's ticks)
    before = hashes()
    loop.kill_flow()  # SIGKILL at once: the last snapshot is up to 0.5 s old, the events after it are read again
    loop.start_flow()
    # the resumed flow re-reads what came after its snapshot and writes every key again (absolute values)
    assert wait_for(lambda: client.hget(KPI_COUNTERS, "o00") is not None and hashes() == before and
                    (time.sleep(1.0) or hashes() == before), 10.0), differences(before, hashes())
    assert loop.row(version)["impressions"] == impressions + len(shown)

    # the gauges (read at the scrape) and the export carry the same totals
    row = loop.row(version)
    want = {"model": "recommender", "version": version, "experiment": "", "arm": "", "surface": "for_you"}

    def gauge(kpi: str) -> float | None:
        for family in text_string_to_metric_families(loop.http.get("/metrics").text):
            for sample in family.samples:
                if sample.name == "pantry_kpi" and sample.labels == {**want, "kpi": kpi}:
                    return sample.value
        return None

    assert gauge("impressions") == row["impressions"]
    assert gauge("ctr") == pytest.approx(row["ctr"])
    out = os.path.join(loop.log_dir, "export")
    result = subprocess.run([sys.executable, "-m", "pantry.cli", "kpis", "export", "--day", now.date().isoformat(),
                             "--out", out], env=subprocess_env(loop.settings), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    table = pq.read_table(os.path.join(out, f"{now.date().isoformat()}.parquet")).to_pylist()
    exported = [r for r in table if r["version"] == version and r["surface"] == "for_you"]
    assert exported and exported[0]["impressions"] == row["impressions"] and exported[0]["ctr"] == row["ctr"]


def test_an_experiments_kpi_fields_are_matched_literally_by_redis(redis_client):
    """The guardrail loop asks Redis for one experiment's fields (HSCAN MATCH on the experiment part of the field);
    glob characters in an id are matched as themselves, and another experiment's fields are not returned."""
    from serving.experiments import _glob_escape

    name = "pantry:test:kpi-match"
    odd = "exp-1-a*[b]?\\c"
    fields = {f"2017-10-31|recommender|v1|{exp}|control|for_you": b"x" for exp in (odd, "exp-1-aX[b]?\\c", "exp-2")}
    redis_client.delete(name)
    redis_client.hset(name, mapping=fields)
    try:
        cursor, found = redis_client.hscan(name, 0, match=f"*|{_glob_escape(odd)}|*", count=1000)
        assert cursor == 0 and [f.decode() for f in found] == [f"2017-10-31|recommender|v1|{odd}|control|for_you"]
    finally:
        redis_client.delete(name)
