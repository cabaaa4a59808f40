"""The console's "Features and stream" page (/console/features, ml_engineer) on the session server.

The session server runs without the live flow (`pantry serve --no-live`), and a live flow on the session's Redis
would move the event clock other tests judge freshness by. So the flow's work on the events this test posts is done
in the test process with the flow's own steps, minus Bytewax: the entries are read from pantry:events as the live
source reads them, decoded by `parse_batch`, judged by the gate (`GateLogic`, live skew rule), and its Control is
written by the control sink (`ControlPartition`, heartbeat on): the counters, the dead letters and the heartbeat in
Redis are what the flow would have written. Starting `pantry stream live` on a Redis of its own with a server of its
own (tests/serving/test_kpis.py) would cost a minute and test the flow, which tests/streaming/ already does.

The rows whose freshness the page shows are written in Feast's layout (`write_rows`), at known ages against an event
clock the test sets; the expected percentiles are computed here from every row of a view in Redis (the session holds
far fewer than freshness.SAMPLE_KEYS customers, so the page's sample is the whole view).
"""

from __future__ import annotations

import html
import math
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import msgspec
import pytest

from pantry import dataset
from pantry.featurestore.layout import ts_field
from pantry.featurestore.pipeline import write_rows
from pantry.featurestore.values import decode_timestamp
from pantry.keys import DEAD_LETTER_STREAM, EVENT_FIELD, EVENTS_STREAM, LIVE_HEARTBEAT, STREAM_COUNTERS, WATERMARK
from pantry.redis_server import sync_client
from pantry.settings import Settings
from serving.console import freshness
from serving.console.features import human_age
from streaming.dataflow import parse_batch
from streaming.features.event import LATENESS_S
from streaming.gate import GateLogic, GateState, Skew
from streaming.sinks import ControlPartition
from streaming.sources import Batch
from tests.serving.conftest import Server, csrf_of

pytestmark = pytest.mark.timeout(600)

CUSTOMER = 9_870_001  # ids no other test uses: their rows and events are removed afterwards
STORE = 524_001  # under the schema's store id bound (pantry.events.MAX_STORE_ID); no store of the slice
PRODUCT = 9_870_003
COUPON = 9_870_004
AGES_D = {"customer_session": 0.01, "customer_activity": 3.0, "customer_repertoire": 12.0,
          "customer_embedding": 40.0, "store_traffic": 0.5, "store_product": 7.0, "product": 100.0,
          "campaign_coupon": 200.0,
          "customer_preferences": 20.0, "customer_substitution_feedback": 30.0,
          "product_substitution_feedback": 60.0}  # days before the event clock of a view's youngest row
ROWS = 40  # per view, row i at AGES_D[view] * (1 + i / 10): percentiles that differ from their neighbours
START = {"processed": 1000, "duplicate": 7, "late": 3, "invalid": 5}  # the gate's resume state: a flow that ran


class Flow:
    """The live flow's steps on the entries after `after` (what LivePartition.next_batch would hand over)."""

    def __init__(self, settings: Settings, clock: datetime):
        self.client = sync_client(settings)
        self.gate = GateLogic(msgspec.msgpack.encode(GateState(max_t=clock.timestamp(), counters=dict(START))),
                              skew=Skew(settings.clock, settings.event_skew_wall_s, settings.event_skew_event_s))
        self.sink = ControlPartition(settings, heartbeat=True)

    def process(self, after: str) -> str:
        entries = self.client.xrange(EVENTS_STREAM, min=f"({after}", max="+")
        position = entries[-1][0].decode()
        batch = Batch(raws=[(i, f.get(EVENT_FIELD)) for i, f in entries], position=position)
        gated, _ = self.gate.on_batch([parse_batch(batch)])
        self.sink.write_batch([g.control for g in gated])
        return position


def _event(event_id: str, ts: datetime, product: int = PRODUCT) -> dict:
    return {"type": "add_to_cart", "event_id": event_id, "ts": ts.isoformat().replace("+00:00", "Z"),
            "customer_id": CUSTOMER, "store_id": STORE, "product_id": product}


def _post(events_http: httpx.Client, events: list[dict]) -> None:
    answer = events_http.post("/v1/events", json={"events": events})
    assert answer.status_code == 202, answer.text


def _text(page: str) -> str:
    """The page as text: tags out, entities decoded, spaces squeezed."""
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page)))


def _row(page: str, view: str) -> list[str]:
    match = re.search(rf'<tr id="view-{view}">(.*?)</tr>', page, re.S)
    assert match, f"no row for view {view}"
    return [_text(c).strip() for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", match.group(1), re.S)]


def _counter(page: str, name: str) -> str:
    match = re.search(rf'id="counter-{name}">([^<]*)<', page)
    assert match, f"no counter {name}"
    return match.group(1)


def _nearest_rank(ordered: list[float], p: float) -> float:
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def _all_ages(settings: Settings, layout, view: str, now: datetime) -> list[float] | None:
    """Every row of `view` in Redis, aged at `now` (a whole SCAN: the session's keyspace is small); None when its
    entity has more keys than the page samples (the catalogue views), so that the page shows a part of them."""
    client = sync_client(settings)
    keys = layout.keys[view]
    pattern = freshness.glob_escape(keys.header) + b"*"
    found = [k for k in client.scan_iter(match=pattern, count=10_000) if len(k) == keys.length]
    if len(found) > freshness.SAMPLE_KEYS:
        return None
    pipe = client.pipeline(transaction=False)
    for key in found:
        pipe.hget(key, ts_field(view))
    return sorted(max(0.0, (now - decode_timestamp(raw)).total_seconds()) for raw in pipe.execute() if raw)


@pytest.fixture(scope="module")
def scene(feast_applied: Settings, layout, api: Server) -> Iterator[datetime]:
    """An event clock, one row per view at a known age; everything it changes is put back afterwards."""
    client = sync_client(feast_applied)
    saved = {"watermark": client.get(WATERMARK), "counters": client.hgetall(STREAM_COUNTERS),
             "beat": client.hgetall(LIVE_HEARTBEAT)}
    first_dead = client.xrevrange(DEAD_LETTER_STREAM, count=1)
    first_event = client.xrevrange(EVENTS_STREAM, count=1)
    clock = datetime.fromisoformat(dataset.manifest(feast_applied).last_event).astimezone(UTC) + timedelta(hours=1)
    client.set(WATERMARK, f"{clock.timestamp():.6f}")
    join = {"customer_session": lambda i: (CUSTOMER + i,), "customer_activity": lambda i: (CUSTOMER + i,),
            "customer_repertoire": lambda i: (CUSTOMER + i,), "customer_embedding": lambda i: (CUSTOMER + i,),
            "store_traffic": lambda i: (STORE + i,), "store_product": lambda i: (STORE + i, PRODUCT + i),
            "product": lambda i: (PRODUCT + i,), "campaign_coupon": lambda i: (COUPON + i,),
            "customer_preferences": lambda i: (CUSTOMER + i,),
            "customer_substitution_feedback": lambda i: (CUSTOMER + i,),
            "product_substitution_feedback": lambda i: (PRODUCT + i,)}
    assert set(join) == set(layout.views), "a view was added: give it rows here"
    for view, days in AGES_D.items():
        write_rows(client, layout, view, [(join[view](i), {}, clock - timedelta(days=days * (1 + i / 10)))
                                          for i in range(ROWS)])
    yield clock
    client.delete(WATERMARK, STREAM_COUNTERS, LIVE_HEARTBEAT)
    if saved["watermark"] is not None:
        client.set(WATERMARK, saved["watermark"])
    if saved["counters"]:
        client.hset(STREAM_COUNTERS, mapping=saved["counters"])
    if saved["beat"]:
        client.hset(LIVE_HEARTBEAT, mapping=saved["beat"])
    for stream, before in ((DEAD_LETTER_STREAM, first_dead), (EVENTS_STREAM, first_event)):
        start = f"({before[0][0].decode()}" if before else "-"
        mine = [i for i, _ in client.xrange(stream, min=start, max="+")]
        if mine:
            client.xdel(stream, *mine)
    client.delete(*{layout.key(view, join[view](i)) for view in join for i in range(ROWS)})


def _page(client: httpx.Client) -> str:
    answer = client.get("/console/features")
    assert answer.status_code == 200, answer.text[:500]
    return answer.text


_FINISHED = re.compile(r"finished at\s+(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC")


def _walked_after(client: httpx.Client, after: datetime, deadline: float) -> tuple[str, datetime | None]:
    """The page once it shows a walk of the keyspace finished after `after` (and that finish time)."""
    while True:
        page = _page(client)
        finished = _FINISHED.search(page)
        at = datetime.fromisoformat(finished.group(1)).replace(tzinfo=UTC) if finished else None
        if (at is not None and at > after) or time.monotonic() > deadline:
            return page, at
        time.sleep(0.3)


def _sampled_page(client: httpx.Client, after: datetime) -> str:
    """The page once a walk that *started* after `after` is complete: the first walk finished after it may have begun
    before, the next one began after it (the session server walks again at every view once a walk is done:
    PANTRY_CONSOLE_SAMPLE_MAX_AGE_S=0 in tests/serving/conftest.py)."""
    deadline = time.monotonic() + 90
    page, first = _walked_after(client, after, deadline)
    return page if first is None else _walked_after(client, first, deadline)[0]


def test_the_page_shows_freshness_per_view_the_counters_and_the_dead_letters(
        scene, console, events_http, feast_applied, layout):
    clock, written = scene, datetime.now(UTC) + timedelta(seconds=1)  # a walk finished after this saw the rows
    client = sync_client(feast_applied)
    before = client.xrevrange(EVENTS_STREAM, count=1)
    start = before[0][0].decode() if before else "0-0"
    late_at = clock - timedelta(hours=2)
    _post(events_http, [_event("console-late-1", late_at)])
    flow = Flow(feast_applied, clock)
    position = flow.process(start)  # the late event: dead letter, late + 1; heartbeat at its entry
    beat_1 = float(client.hget(LIVE_HEARTBEAT, "ts"))
    fresh = [_event(f"console-fresh-{i}", clock, PRODUCT + i) for i in range(30)]
    _post(events_http, [*fresh, fresh[0]])  # 30 events, one of them twice: pending for the flow

    ml = console("ml_engineer")
    page = _sampled_page(ml, written)
    text = _text(page)
    assert "The sample comes from a walk" in page, text[:2000]

    # freshness: every view with its percentiles, each (but the catalogue views, sampled) as computed here from
    # every row of it in Redis
    exact = 0
    for view in AGES_D:
        cells = _row(page, view)
        assert cells[0] == view
        if view == "product_substitution_feedback":  # rows on 40 of the catalogue's product keys: the page's sample
            continue  # of the product keys may hold none of them (it then shows –)
        assert "–" not in cells[3:7], cells
        ages = _all_ages(feast_applied, layout, view, clock)
        if ages is not None:
            exact += 1
            assert cells[2].split()[0] == f"{len(ages):,}", (view, cells)
            assert len(ages) >= ROWS
            assert cells[3:7] == [human_age(_nearest_rank(ages, p)) for p in (50, 90, 99)] + [human_age(ages[-1])], \
                (view, cells)
    assert exact >= 6, "the customer and store views hold fewer rows than the page samples"
    assert f"service clock, {clock:%Y-%m-%d %H:%M:%S} UTC" in text

    # the live flow: counters, the dead letter with its reason, the 31 entries it has not read yet
    assert _counter(page, "processed") == f"{START['processed']:,}"
    assert _counter(page, "late") == str(START["late"] + 1)
    assert _counter(page, "invalid") == str(START["invalid"])
    assert _counter(page, "duplicate") == str(START["duplicate"])
    reason = f"late: {clock.timestamp() - late_at.timestamp():.0f}s behind the newest event (lateness bound " \
             f"{LATENESS_S:.0f}s)"
    dead = page[page.index('id="dead-h"'):]
    assert html.escape(reason, quote=False) in dead
    assert "console-late-1" in dead  # the payload, decoded
    assert "Pending events 31" in text
    assert f"Last entry processed {position}" in text
    assert "Throughput n/a" in text  # one reading of the heartbeat so far

    # the flow reads the 31 entries a second later: the throughput is what its heartbeat says
    time.sleep(1.2)
    flow.process(position)
    beat_2 = float(client.hget(LIVE_HEARTBEAT, "ts"))
    page = _page(ml)
    text = _text(page)
    assert _counter(page, "processed") == f"{START['processed'] + 30:,}"
    assert _counter(page, "duplicate") == str(START["duplicate"] + 1)
    assert "Pending events 0" in text
    assert f"{30 / (beat_2 - beat_1):,.1f} events/s" in text
    assert (footer := re.search(r"rendered in ([\d.]+) ms", page)) and float(footer.group(1)) > 0


def test_a_merchandiser_is_refused_and_a_visitor_is_sent_to_log_in(api: Server, api_keys, console):
    answer = console("merchandiser").get("/console/features")
    assert answer.status_code == 403
    assert "ml_engineer" in answer.text
    with httpx.Client(base_url=api.url, timeout=10.0) as anonymous:
        answer = anonymous.get("/console/features")
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/console/login")


async def test_the_page_renders_with_a_notice_when_its_reads_fail(own_settings, api_keys):
    """Redis fails the page's reads (every pipeline, the freshness round trip, SCAN) while the session read still
    works: each section says Redis is unreachable, the page is a 200."""
    from litestar.testing import AsyncTestClient

    from serving.app import create_app

    async with AsyncTestClient(app=create_app(own_settings), timeout=10) as http:
        token = csrf_of((await http.get("/console/login")).text)
        answer = await http.post("/console/login", data={"api_key": api_keys.ml_engineer, "csrf_token": token},
                                 follow_redirects=False)
        assert answer.status_code == 303, answer.text
        svc = http.app.state.services

        def refused(*args, **kwargs):
            raise ConnectionRefusedError("Connection refused (test)")

        async def refused_async(*args, **kwargs):
            refused()

        svc.redis.pipeline = refused
        svc.redis.scan = refused_async
        svc.pipeline.run = refused_async
        answer = await http.get("/console/features")
    assert answer.status_code == 200, answer.text[:500]
    text = _text(answer.text)
    assert text.count("Redis unreachable") == 3, text[:3000]  # freshness, drift, live flow
    assert "rendered in" in text


# ---- the page's pure parts ----------------------------------------------------------------------------------------


def test_nearest_rank_percentiles_are_observed_values():
    ages = [float(a) for a in range(1, 101)]  # 1..100
    assert [freshness.percentile(ages, p) for p in (50, 90, 99, 100)] == [50.0, 90.0, 99.0, 100.0]
    assert freshness.percentile([7.0], 99) == 7.0
    assert freshness.percentile([], 50) is None


@pytest.mark.parametrize("t", [0.0, 1.5, 1_512_224_465.123456, 1_798_761_600.0, -86_400.25])
def test_the_timestamp_decoder_agrees_with_protobuf(t):
    from pantry.featurestore.values import timestamp

    raw = timestamp(t)
    expected = decode_timestamp(raw).timestamp() if raw else 0.0
    assert freshness.timestamp_s(raw) == pytest.approx(expected, abs=1e-6)


def test_binary_key_headers_match_literally():
    assert freshness.glob_escape(b"a*b?[c]\\d") == b"a\\*b\\?\\[c\\]\\\\d"


def test_throughput_is_measured_between_readings_of_one_flow_process():
    from serving.console.stream_status import Reading, ThroughputMeter

    meter = ThroughputMeter()
    assert meter.observe(Reading(100.0, 1_000, "7")) is None  # one reading: no rate
    assert meter.observe(Reading(100.5, 1_050, "7")) is None  # under MIN_WINDOW_S
    rate = meter.observe(Reading(102.0, 1_300, "7"))  # since the newest reading at least 1 s older: 100.5
    assert rate is not None and rate.per_s == pytest.approx(250 / 1.5) and rate.window_s == pytest.approx(1.5)
    assert meter.observe(Reading(103.0, 10, "8")) is None  # another process (a restart): no rate across it
    rate = meter.observe(Reading(104.0, 110, "8"))
    assert rate is not None and rate.per_s == pytest.approx(100.0)


def test_drift_features_are_shown_under_their_views():
    from pantry.drift import FeatureDrift
    from pantry.drift_report import DriftReport, ModelDrift, Thresholds
    from serving.console.features import by_view, drift_rows

    def feature(name: str, status: str) -> FeatureDrift:
        return FeatureDrift(name, 0.3 if status == "significant" else 0.01, status, 500, [], [], [])

    report = DriftReport(datetime.now(UTC), 7, [], Thresholds(0.1, 0.25, 100), [
        ModelDrift("recommender", "v2", True, "ok", 500, "significant", None, 300,
                   [feature("customer_activity.orders_7d", "stable"), feature("customer_session.session_spend",
                                                                              "significant"),
                    feature("score.top", "stable")]),
        ModelDrift("next_best_action", "v1", True, "ok", 500, "moderate", None, 300,
                   [feature("customer_activity.orders_7d", "moderate")]),
        ModelDrift("recommender", "v3", False, "ok", 20, "significant", None, 300,
                   [feature("customer_activity.spend_7d", "significant")])])
    rows = drift_rows(report)
    assert {(r.view, r.feature, r.model) for r in rows if r.active} == {
        ("customer_activity", "orders_7d", "recommender"), ("customer_session", "session_spend", "recommender"),
        ("model scores", "score.top", "recommender"), ("customer_activity", "orders_7d", "next_best_action")}
    views = by_view(rows)
    assert views["customer_activity"].worst == "moderate"  # the inactive v3's "significant" does not count
    assert views["customer_activity"].models == ["next_best_action", "recommender"]
    assert views["customer_session"].worst == "significant"
