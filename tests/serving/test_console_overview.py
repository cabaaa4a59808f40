"""The console's overview: the per-minute traffic history (counted per worker, flushed to Redis, read back as the last
hour), the SVG sparklines and the p99 estimate from latency buckets, the attention items by role, and the page on the
session's server: requests sent to /v1/recommendations show up in its charts within a flush or two."""

from __future__ import annotations

import random
import re
import time

import httpx
import pytest

from pantry import experiments
from pantry.experiments import Experiment
from pantry.health import LiveFlow
from pantry.keys import CAMPAIGN_APPROVALS, EXPERIMENTS
from pantry.redis_server import sync_client
from serving.campaigns import decode_approvals, load_campaigns, status_of
from serving.console import overview, traffic
from serving.console.traffic import BOUNDS_MS, TrafficRecorder, last_hour, quantile_ms
from serving.redis_guard import StoreUnavailable

UNKNOWN = 9_100_000_077  # no customer row: every answer is a cold_start fallback


# ---- the history without a server: a fake round trip that does what Redis does --------------------------------


class FakeRoundTrip:
    """The worker's RoundTrip (pantry.featurestore.roundtrip) over dicts: HINCRBY, EXPIRE, HGETALL as Redis answers."""

    def __init__(self):
        self.hashes: dict[bytes, dict[bytes, bytes]] = {}
        self.ttls: dict[bytes, int] = {}

    async def run(self, commands, timeout_s=None):
        out = []
        for name, key, *args in commands:
            h = self.hashes.setdefault(key, {})
            if name == b"HINCRBY":
                h[args[0]] = str(int(h.get(args[0], b"0")) + args[1]).encode()
                out.append(int(h[args[0]]))
            elif name == b"EXPIRE":
                self.ttls[key] = args[0]
                out.append(1)
            else:
                assert name == b"HGETALL"
                out.append([x for pair in h.items() for x in pair])
        return out


class FakeStore:
    def __init__(self):
        self.down = False
        self.calls = 0

    async def call(self, make):
        self.calls += 1
        if self.down:
            raise StoreUnavailable("down")
        return await make()


async def test_counts_reach_redis_per_minute_and_read_back_as_the_last_hour():
    recorder, roundtrip, store = TrafficRecorder(), FakeRoundTrip(), FakeStore()
    rng = random.Random(7)
    latencies = [rng.lognormvariate(-5.3, 0.6) for _ in range(2000)]  # ~5 ms median, a long tail
    for i, seconds in enumerate(latencies):
        recorder.request("/v1/recommendations", 503 if i % 100 == 0 else 200, seconds)
    for _ in range(150):
        recorder.fallback("recommendations")
    recorder.request("/v1/features", 200, 0.002)
    store.down = True
    assert await recorder.flush(store, roundtrip) == 0 and roundtrip.hashes == {}
    assert recorder.pending, "a failed flush keeps the counts"
    store.down = False
    assert await recorder.flush(store, roundtrip) > 0 and not recorder.pending
    assert await recorder.flush(store, roundtrip) == 0  # nothing new: no round trip
    assert store.calls == 2
    assert set(roundtrip.ttls.values()) == {traffic.RETENTION_S}

    hour = await last_hour(store, roundtrip)
    assert [r.route for r in hour.routes] == ["/v1/recommendations", "/v1/features"]
    rec = hour.routes[0]
    assert len(rec.requests_per_minute) == traffic.MINUTES
    assert rec.requests == 2000 and rec.errors == 20 and rec.fallbacks == 150
    assert rec.fallback_rate == pytest.approx(0.075)
    assert rec.requests_per_minute[-1] + rec.requests_per_minute[-2] == 2000  # the current minute (or the last one)
    assert hour.requests == 2001 and hour.errors == 20 and hour.fallbacks == 150
    # the estimate lies in the bucket holding the true quantile
    true_p99 = sorted(latencies)[int(0.99 * len(latencies)) - 1] * 1000
    upper = next(b for b in BOUNDS_MS if b >= true_p99)
    lower = max([0, *(b for b in BOUNDS_MS if b < true_p99)])
    assert lower <= rec.p99_ms <= upper, (rec.p99_ms, true_p99)
    true_p50 = sorted(latencies)[len(latencies) // 2] * 1000
    assert abs(rec.p50_ms - true_p50) <= 2.0, (rec.p50_ms, true_p50)
    assert all(v is None for v in rec.p99_ms_per_minute[:-2])  # minutes without requests have no p99


async def test_two_workers_add_into_the_same_hashes():
    roundtrip, store = FakeRoundTrip(), FakeStore()
    for worker in (TrafficRecorder(), TrafficRecorder()):
        for _ in range(3):
            worker.request("/v1/substitutions", 200, 0.004)
        await worker.flush(store, roundtrip)
    assert (await last_hour(store, roundtrip)).routes[0].requests == 6


def test_quantile_from_buckets():
    buckets = [0] * (len(BOUNDS_MS) + 1)
    assert quantile_ms(buckets, 0.99) is None
    five = BOUNDS_MS.index(5)
    buckets[five] = 100  # all in (4, 5] ms: interpolated inside the bucket
    assert quantile_ms(buckets, 0.5) == pytest.approx(4.5)
    assert quantile_ms(buckets, 0.99) == pytest.approx(4.99)
    buckets[0] = 900  # 90% at or under 1 ms
    assert quantile_ms(buckets, 0.5) == pytest.approx(0.5 / 0.9)
    assert 4.0 < quantile_ms(buckets, 0.99) <= 5.0
    buckets[-1] = 1000  # half of everything slower than the last bound: at least that bound
    assert quantile_ms(buckets, 0.99) == BOUNDS_MS[-1]


def test_sparkline_is_an_accessible_svg_of_numbers():
    svg = overview.sparkline([0, 5, None, 10, 2], "requests per minute", total=True)
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    label = "requests per minute, last 5 min: max 10, latest 2, total 17"
    assert f'aria-label="{label}"' in svg and f"<title>{label}</title>" in svg and 'role="img"' in svg
    path = re.search(r'<path d="([^"]*)"', svg).group(1)
    assert path.count("M") == 2, "a minute without data breaks the line"
    assert path.startswith("M2.0 46.0") and "M179.0 2.0" in path  # 0 at the bottom, the max at the top
    assert "h" not in path
    lone = overview.sparkline([None, 3.25, None], "p99 latency per minute", unit=" ms", digits=1)
    assert "max 3.2 ms" in lone or "max 3.3 ms" in lone
    assert re.search(r'd="M118\.0 2\.0h2"', lone), "a lone minute is drawn as a dash"
    assert "no data" in overview.sparkline([None] * 60, "fallback rate per minute")
    assert overview.chart([1, 4, 2], "requests per minute", "Requests").caption == "Requests, max 4"
    assert overview.chart([None, 2.5], "p99", "p99", unit=" ms", digits=1).caption == "p99, max 2.5\u00a0ms"
    hostile = overview.sparkline([1], '<script>alert("x")</script>')
    assert "<script>" not in hostile and "&lt;script&gt;" in hostile


def test_fallback_routes_are_the_answer_endpoints_routes():
    from serving.answers import next_best_action, recommendations, substitutions
    from serving.controllers.next_best_action import NextBestActionController
    from serving.controllers.recommendations import RecommendationsController
    from serving.controllers.substitutions import SubstitutionsController

    answers = {recommendations.ENDPOINT: RecommendationsController.path,
               substitutions.ENDPOINT: SubstitutionsController.path,
               next_best_action.ENDPOINT: NextBestActionController.path}
    assert answers == traffic.FALLBACK_ROUTES


def _experiment(**kw) -> Experiment:
    base = {"id": "exp-1", "model": "recommender", "control": "v1", "treatment": "v2", "share": 0.1,
            "created_at": 1_000.0}
    return Experiment(**{**base, **kw})


def test_attention_items_for_experiments_and_the_live_flow():
    now = 100_000.0
    items = overview.experiment_items([
        _experiment(id="exp-run", ramp=[0.1, 0.5], created_at=now - 600),
        _experiment(id="exp-guard", status="stopped", ended_by="guardrail", ended_at=now - 3600,
                    reason="guardrail p99: 400 ms > 250 ms"),
        _experiment(id="exp-old", status="stopped", ended_by="guardrail", ended_at=now - 3 * 86400),
        _experiment(id="exp-by-hand", status="stopped", ended_by="test-ml_engineer", ended_at=now - 60),
        _experiment(id="exp-promoted", status="promoted", ended_by="test-ml_engineer", ended_at=now - 60),
    ], now)
    assert [(i.level, i.link) for i in items] == [("info", "/console/models#experiment-exp-run"),
                                                  ("bad", "/console/models#experiment-exp-guard")]
    assert "stage 1 of 2" in items[0].detail and "10 min" in items[0].detail
    assert "400 ms > 250 ms" in items[1].detail and "60 min ago" in items[1].detail

    # 5xx answers of the last minutes are an item; older ones only show in the charts
    minutes = [[] for _ in range(traffic.MINUTES)]
    minutes[0] = [b"/v1/events|n", b"4", b"/v1/events|e", b"4"]
    minutes[-1] = [b"/v1/features|n", b"9", b"/v1/features|e", b"3", b"/v1/features|le5", b"9"]
    cards = overview.route_cards(traffic.summarise(minutes, 0))
    assert [c.hour.route for c in cards] == [*overview.ANSWER_ROUTES, "/v1/features", "/v1/events"]
    errors = overview.error_items(cards)
    assert [(i.level, i.link) for i in errors] == [("bad", "#route-v1-features")]
    assert "answered 3 times with a 5xx" in errors[0].title
    assert cards[3].fallbacks is None and cards[0].fallbacks is not None  # /v1/features never falls back

    assert overview.flow_items(LiveFlow(True, "processing", 0.5, 2.0)) == []
    stopped = overview.flow_items(LiveFlow(False, "the live flow's last heartbeat is 42.0 s old", 42.0, 0.0))
    assert [(i.level, i.link) for i in stopped] == [("bad", "/console/features")]
    behind = overview.flow_items(LiveFlow(True, "processing", 0.5, 300.0))
    assert behind[0].level == "warn" and "stale" in behind[0].title and "5 min" in behind[0].detail


# ---- the page on the session's server ------------------------------------------------------------------------------


def _card(html: str, route: str) -> str:
    match = re.search(rf'<article class="card[^"]*" id="{overview.anchor_of(route)}">(.*?)</article>', html, re.S)
    assert match, f"no card for {route}"
    return match.group(1)


def _figures(card: str) -> tuple[int, int]:
    """(requests in the hour, fallbacks in the hour) of a card, from the requests chart's label and the facts."""
    total = re.search(r'aria-label="requests per minute, last 60 min: (?:no data|max [\d,]+, latest [\d,]+, '
                      r'total ([\d,]+))"', card)
    assert total, card[:2000]
    fallbacks = re.search(r"<dt>Fallbacks</dt><dd>([\d,]+)", card)
    assert fallbacks, card[:2000]
    return int((total.group(1) or "0").replace(",", "")), int(fallbacks.group(1).replace(",", ""))


def _server_ms(html: str) -> float:
    return float(re.search(r"rendered in ([\d.]+) ms", html).group(1))


def test_requests_show_up_in_the_overview(http, console):
    page = console("ml_engineer")
    first = page.get("/console")
    assert first.status_code == 200, first.text[:500]
    before = _figures(_card(first.text, "/v1/recommendations"))
    sent = 7
    for _ in range(sent):
        answer = http.post("/v1/recommendations", json={"customer_id": UNKNOWN, "k": 3})
        assert answer.status_code == 200 and answer.json()["fallback"] is not None
    deadline = time.monotonic() + 15.0
    while True:
        html = page.get("/console").text
        now = _figures(_card(html, "/v1/recommendations"))
        if now[0] >= before[0] + sent and now[1] >= before[1] + sent:
            break
        assert time.monotonic() < deadline, f"after 15 s the overview shows {now}, before {before}, sent {sent}"
        time.sleep(0.5)
    card = _card(html, "/v1/recommendations")
    assert re.search(r'aria-label="p99 latency per minute, last 60 min: max [\d.,]+ ms', card)
    assert re.search(r'aria-label="fallback rate per minute, last 60 min: max [\d.,]+ %', card)
    assert card.count("<svg") == 3
    assert "<script" not in html
    assert _server_ms(html) < 200.0, "the overview renders in under 200 ms"
    # the ML engineer's checks: no campaign item (not theirs), the live flow reported
    attention = html.split('id="traffic-h"')[0]
    assert "/console/campaigns" not in attention and "Live flow:" in attention


def test_each_role_sees_the_items_of_its_pages(console, feast_applied):
    client = sync_client(feast_applied)
    eid = f"exp-overview-{int(time.time())}"
    stopped = _experiment(id=eid, status="stopped", ended_by="guardrail", ended_at=time.time() - 60,
                          reason="guardrail fallback_rate: +9.0 pp", created_at=time.time() - 600)
    client.hset(EXPERIMENTS, eid, experiments.encode(stopped))
    try:
        engineer = console("ml_engineer").get("/console").text
        merchandiser = console("merchandiser").get("/console").text
    finally:
        client.hdel(EXPERIMENTS, eid)
    link = f'href="/console/models#experiment-{eid}"'
    assert link in engineer and f"Experiment {eid} stopped by a guardrail" in engineer
    assert link not in merchandiser and "/console/features" not in merchandiser
    assert "Live flow:" not in merchandiser

    approvals = decode_approvals(client.hgetall(CAMPAIGN_APPROVALS))
    campaigns = load_campaigns(feast_applied)
    pending = sum(status_of(c, approvals.get(cid)) == "pending" for cid, c in campaigns.items())
    attention = merchandiser.split('id="traffic-h"')[0]
    if pending:
        assert f"{pending} campaign{'s' if pending != 1 else ''} waiting for a decision" in attention
        assert 'href="/console/campaigns"' in attention
    else:
        assert "waiting for a decision" not in attention
    assert "waiting for a decision" not in engineer


def test_without_a_session_the_overview_redirects_to_the_login(api):
    answer = httpx.get(f"{api.url}/console", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/console/login")
