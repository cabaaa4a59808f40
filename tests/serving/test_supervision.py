"""`pantry serve` as it runs in production: the supervisor with the API (granian, 2 workers) and the live dataflow,
real processes on the session's Redis (own db, own data dir). /readyz follows the live flow's heartbeat (503 while
it is stopped, 200 when it is back); a SIGKILLed live flow is restarted and resumes from its recovery state with
every event counted once; a SIGKILLed API worker is replaced by granian while the other answers; SIGTERM stops
everything."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psutil
import pytest

from pantry import events
from pantry.featurestore import repo
from pantry.keys import EVENT_FIELD, EVENTS_STREAM, STREAM_COUNTERS
from pantry.redis_server import free_port, sync_client
from pantry.settings import Settings, from_env

MAX_AGE_S = 2.0  # PANTRY_LIVE_MAX_AGE_S here (default 10 s): the 503 shows sooner
CUSTOMER, STORE = 770_001, 77


@dataclass
class Served:
    url: str
    process: subprocess.Popen
    settings: Settings
    log: Path

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def workers_started(self) -> int:
        return self.log.read_text(errors="replace").count("Started worker-")  # granian: a worker runs the app

    def child(self, marker: str) -> psutil.Process:
        for kid in psutil.Process(self.process.pid).children():
            if marker in " ".join(kid.cmdline()):
                return kid
        raise AssertionError(f"no child with {marker!r}:\n{self.tail()}")

    def ready(self) -> httpx.Response:
        return httpx.get(f"{self.url}/readyz", timeout=2)


def until(check: Callable[[], object], timeout_s: float, what: str, served: Served | None = None) -> float:
    start = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        if time.monotonic() - start > timeout_s:
            pytest.fail(f"{what}: not within {timeout_s} s\n{served.tail() if served else ''}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def served(feast_applied: Settings, trained_models, tmp_path_factory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("supervised")
    data = root / "data"
    data.mkdir()
    (data / "data").symlink_to(feast_applied.dataset_dir)
    shutil.copy(feast_applied.registry_path, data / "registry.db")
    port = free_port()
    env = {**os.environ, "PANTRY_DATA_DIR": str(data), "PANTRY_PORT": str(port), "PANTRY_WORKERS": "2",
           "REDIS_URL": f"redis://127.0.0.1:{feast_applied.embedded_redis_port}/9",
           "PANTRY_LIVE_MAX_AGE_S": str(MAX_AGE_S), "PANTRY_STREAM_SNAPSHOT_S": "1",
           "PANTRY_RESTART_BACKOFF_MAX_S": "2", "PANTRY_ACCESS_LOG": "off"}
    settings = from_env(env)
    sync_client(settings).flushdb()
    log = root / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pantry.cli", "serve"], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    s = Served(f"http://127.0.0.1:{port}", proc, settings, log)
    try:
        until(lambda: s.ready().status_code == 200, 120, "ready", s)
        yield s
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()  # the children follow (PR_SET_PDEATHSIG)
                proc.wait()


def test_readyz_reports_the_live_flow_and_what_202_guarantees(served: Served):
    answers = []
    until(lambda: answers.append(served.ready()) or answers[-1].status_code == 200, 10, "ready", served)
    body = answers[-1].json()
    flow = body["live_flow"]
    assert flow["ok"] is True and flow["heartbeat_age_s"] < MAX_AGE_S, body
    assert flow["pid"] == served.child("stream live").pid and flow["lag_s"] == 0.0, body
    assert body["durability"]["appendonly"] == "yes" and body["durability"]["appendfsync"] == "everysec"
    assert body["reasons"] == []
    metrics = httpx.get(f"{served.url}/metrics", timeout=5,
                        headers={"X-API-Key": os.environ["PANTRY_CLIENT_KEY"]}).text  # the data key has `metrics`
    assert "pantry_live_heartbeat_age_seconds" in metrics and "pantry_live_lag_seconds" in metrics
    assert "durability of /v1/events" in served.tail() and "survive a Redis crash" in served.tail()


def _xadd(served: Served, *evs: events.Event) -> None:
    client = sync_client(served.settings)
    for e in evs:
        client.xadd(EVENTS_STREAM, {EVENT_FIELD: events.encode_msgpack(e)})


def _counters(served: Served) -> dict[str, float]:
    return {k.decode(): float(v) for k, v in sync_client(served.settings).hgetall(STREAM_COUNTERS).items()}


def test_readyz_is_503_while_the_live_flow_is_stopped_and_200_when_it_is_back(served: Served):
    flow = served.child("stream live")
    flow.send_signal(signal.SIGSTOP)
    try:
        _xadd(served, events.ProductView(event_id=f"stopped-{time.time_ns()}", ts=datetime.now(UTC),
                                         customer_id=CUSTOMER + 1, product_id=1))
        until(lambda: served.ready().status_code == 503, MAX_AGE_S + 5, "503 while stopped", served)
        body = served.ready().json()
        assert body["status"] == "not_ready" and body["live_flow"]["ok"] is False
        assert any("heartbeat" in r and "not processing" in r for r in body["reasons"]), body
        assert body["live_flow"]["lag_s"] > 0, body  # the event it has not processed
    finally:
        flow.send_signal(signal.SIGCONT)
    until(lambda: served.ready().status_code == 200, 10, "200 once it runs again", served)
    until(lambda: served.ready().json()["live_flow"]["lag_s"] == 0.0, 5, "caught up", served)


def _customer_row(served: Served) -> dict:
    return repo.store(served.settings).get_online_features(
        features=["customer_session:session_events", "customer_session:cart_product_ids",
                  "customer_repertoire:repertoire_product_ids"],
        entity_rows=[{"customer_id": CUSTOMER}]).to_dict()


def test_a_killed_live_flow_is_restarted_and_resumes_from_its_recovery_state(served: Served):
    base = datetime.now(UTC)
    n = [0]

    def ev(cls, **kw):
        n[0] += 1
        return cls(event_id=f"sv-{base.timestamp()}-{n[0]}", ts=base + timedelta(seconds=n[0]),
                   customer_id=CUSTOMER, **kw)

    before = _counters(served)
    first = [ev(events.ProductView, product_id=p) for p in (101, 102, 103)]
    first += [ev(events.Purchase, store_id=STORE, basket_id=1, product_id=p, quantity=1, sales_value=1.0)
              for p in (101, 102)]
    _xadd(served, *first)
    until(lambda: _counters(served)["processed"] == before["processed"] + 5, 10, "first events", served)
    time.sleep(1.5)  # a recovery snapshot (every 1 s here) covers some of them

    old = served.child("stream live")
    old.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    second = [ev(events.AddToCart, store_id=STORE, product_id=p) for p in (104, 105, 106)]
    second.append(ev(events.Purchase, store_id=STORE, basket_id=2, product_id=107, quantity=1, sales_value=1.0))
    _xadd(served, *second)  # while it is down
    until(lambda: _counters(served)["processed"] == before["processed"] + 9, 60, "processing again", served)
    print(f"SIGKILL of the live flow -> its events processed again in {time.monotonic() - killed:.1f} s")

    assert served.child("stream live").pid != old.pid
    assert "live flow (pid" in served.tail() and "killed by SIGKILL" in served.tail()
    after = _counters(served)
    assert after["duplicate"] == before.get("duplicate", 0)  # events re-read after the snapshot count once
    row = _customer_row(served)
    assert row["session_events"] == [9]
    assert sorted(row["cart_product_ids"][0]) == [104, 105, 106]
    assert {101, 102, 107} <= set(row["repertoire_product_ids"][0])
    until(lambda: served.ready().status_code == 200, 10, "ready after the restart", served)


def test_a_killed_api_worker_is_replaced_while_the_other_answers(served: Served):
    api = served.child("--api-only")
    workers = api.children()
    assert len(workers) == 2, workers
    started = served.workers_started()
    workers[0].send_signal(signal.SIGKILL)
    killed = time.monotonic()
    failures: list[str] = []  # what each failed /healthz got, at how long after the kill
    while time.monotonic() - killed < 90:  # a worker's start reads the Feast registry: slow on a busy machine
        try:
            assert httpx.get(f"{served.url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError as exc:
            failures.append(f"{time.monotonic() - killed:.2f} s: {type(exc).__name__}: {exc}")
        now = {w.pid for w in api.children()}
        if len(now) == 2 and workers[0].pid not in now and served.workers_started() > started:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"worker not replaced: {api.children()}\n{served.tail()}")
    print(f"API worker replaced and ready in {time.monotonic() - killed:.1f} s, {len(failures)} failed /healthz")
    assert not failures, failures
    assert served.child("--api-only").pid == api.pid  # granian respawned it; the supervisor had nothing to do
    # the killed worker's `live*` gauges stop counting: its gauge files go at the next scrape
    prom = served.settings.data_dir / "prometheus"
    assert any(prom.glob(f"gauge_live*_{workers[0].pid}.db")), sorted(p.name for p in prom.iterdir())
    httpx.get(f"{served.url}/metrics", timeout=5, headers={"X-API-Key": os.environ["PANTRY_CLIENT_KEY"]})
    assert not any(prom.glob(f"gauge_live*_{workers[0].pid}.db"))


def test_sigterm_stops_every_process(served: Served):
    tree = psutil.Process(served.process.pid).children(recursive=True)
    assert len(tree) >= 4  # the live flow, granian and its 2 workers
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(timeout=30) == 0, served.tail()
    _, alive = psutil.wait_procs(tree, timeout=5)
    assert alive == [], alive
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{served.url}/healthz", timeout=1)
