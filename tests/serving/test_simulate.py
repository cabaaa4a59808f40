"""`pantry simulate` against a real pantry (`pantry serve` with its live dataflow, the session's Redis and slice):
every request succeeds, the outcome events are accepted and the flow processes every one of them (none late, none
dead), and the decisions are logged. Also the Locust user, for a few seconds.

The flow here has its own data dir (its own recovery store: a fresh gate, so other suites' later events do not make
these late), linked to the session's dataset and Feast registry; the session's event stream, clock and counters are
put back afterwards (as tests/streaming/test_live.py does). Here beside the serving suite for its trained models."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path

import httpx
import msgspec
import pytest

from load_tests import runner as locust_runner
from load_tests import server
from load_tests.simulate.runner import simulate
from load_tests.simulate.visits import load_window, parse_day
from load_tests.slo import Slo, evaluate
from pantry.keys import DEAD_LETTER_STREAM, DECISIONS_STREAM, EVENTS_STREAM, STREAM_COUNTERS, WATERMARK
from pantry.redis_server import free_port, sync_client
from pantry.settings import Settings

START, END = parse_day("2017-11-01"), parse_day("2017-11-04")
MAX_VISITS = 30


def wait_for(predicate, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.fixture(scope="module")
def sim_service(feast_applied: Settings, trained_models, tmp_path_factory: pytest.TempPathFactory):
    own = tmp_path_factory.mktemp("sim-data")
    (own / "data").symlink_to(feast_applied.dataset_dir)
    (own / "registry.db").symlink_to(feast_applied.registry_path)
    settings = msgspec.structs.replace(feast_applied, data_dir=own)
    client = sync_client(settings)
    saved_watermark, saved_counters = client.get(WATERMARK), client.hgetall(STREAM_COUNTERS)
    client.delete(EVENTS_STREAM, STREAM_COUNTERS)
    # the service clock at the window's start: the events of the window are then within the accepted skew
    client.set(WATERMARK, f"{(START - timedelta(minutes=1)).timestamp():.6f}")
    try:
        with server.background_serve(settings, own / "serve.log", port=free_port(), workers=1, timeout_s=90,
                                     live=True) as url:
            yield url, settings, client
    finally:
        client.delete(EVENTS_STREAM, STREAM_COUNTERS)
        if saved_counters:
            client.hset(STREAM_COUNTERS, mapping=saved_counters)
        if saved_watermark is None:
            client.delete(WATERMARK)
        else:
            client.set(WATERMARK, saved_watermark)


def test_simulated_visits_succeed_and_the_flow_processes_every_outcome(sim_service):
    url, settings, client = sim_service
    window = load_window(settings, START, END, max_visits=MAX_VISITS)
    assert len(window.visits) == MAX_VISITS and window.asks > 0
    dead_before, decisions_before = client.xlen(DEAD_LETTER_STREAM), client.xlen(DECISIONS_STREAM)

    stats = asyncio.run(simulate(window.visits, url, settings.client_key, settings.ingest_key, concurrency=4,
                                 progress=False))

    assert not stats.non_2xx, stats.summary()
    assert stats.visits == MAX_VISITS and not stats.undecodable
    baskets = [v for v in window.visits if v.lines]
    assert stats.requests["/v1/recommendations"] == stats.requests["/v1/next-best-action"] == len(baskets)
    assert stats.requests["/v1/substitutions"] == sum(1 for v in baskets if v.substitution_asks)
    assert stats.outcomes["purchase"] == sum(len(v.lines) for v in baskets)
    assert stats.outcomes["impression"] >= 10 * len(baskets) * 0.5  # k=10 recommendations shown per visit, mostly
    accepted = sum(n for k, n in stats.outcomes.items() if " " not in k)
    assert client.xlen(EVENTS_STREAM) == accepted  # every accepted event is in the stream, once
    answered = sum(stats.requests[p] for p in ("/v1/recommendations", "/v1/next-best-action", "/v1/substitutions"))
    assert wait_for(lambda: client.xlen(DECISIONS_STREAM) >= decisions_before + answered, 5)

    def counters():
        return {k.decode(): float(v) for k, v in client.hgetall(STREAM_COUNTERS).items()}

    assert wait_for(lambda: counters().get("processed", 0) >= accepted, 30), counters()
    assert counters().get("late", 0) == 0 and counters().get("invalid", 0) == 0
    assert client.xlen(DEAD_LETTER_STREAM) == dead_before, client.xrevrange(DEAD_LETTER_STREAM, count=2)


def test_the_locust_user_replays_visits_without_failures(sim_service, tmp_path: Path):
    url, settings, client = sim_service
    late_before = float(client.hget(STREAM_COUNTERS, "late") or 0)
    # no PANTRY_SIMULATE_FROM: the visits that follow the service clock (after the other test's, if it ran)
    proc, run = locust_runner.start_locust(settings, tmp_path, host=url, users=2, rate=10, duration_s=4,
                                           spawn_rate=2, locustfile=locust_runner.SIMULATE_LOCUSTFILE)
    proc.wait(timeout=90)
    verdict = evaluate(Slo(), run.csv_prefix)
    assert verdict.total_requests > 0 and verdict.total_failures == 0, verdict.failure_messages[:5]
    assert {"/v1/recommendations", "/v1/next-best-action", "/v1/events"} <= {e.name for e in verdict.endpoints
                                                                             if e.requests}
    time.sleep(1.0)  # the flow's next flush
    assert float(client.hget(STREAM_COUNTERS, "late") or 0) == late_before


def test_the_command_continues_from_the_service_clock_and_reports(sim_service):
    from click.testing import CliRunner

    from load_tests.simulate.cli import simulate as command

    url, settings, client = sim_service
    now = httpx.get(f"{url}/v1/clock", headers={"X-API-Key": settings.client_key}).json()["now"]
    late_before = float(client.hget(STREAM_COUNTERS, "late") or 0)
    result = CliRunner().invoke(command, ["--from", now, "--to", "2017-12-01", "--host", url, "--max-visits", "5",
                                          "--no-progress", "--client-key", settings.client_key,
                                          "--ingest-key", settings.ingest_key])
    assert result.exit_code == 0, result.output
    assert "==> 5 visits" in result.output and "non-2xx or no answer: 0" in result.output
    assert "/v1/recommendations" in result.output
    time.sleep(1.0)
    assert float(client.hget(STREAM_COUNTERS, "late") or 0) == late_before


def test_a_visit_past_a_gap_the_clock_cannot_cross_stops_the_run_with_why(sim_service):
    """A visit more than the event skew (a day) past the service clock, with nothing in flight to move it: its events
    would be refused, and so would every later visit's, so the run stops and says why instead of crawling."""
    import dataclasses

    url, settings, client = sim_service
    now = parse_day(httpx.get(f"{url}/v1/clock", headers={"X-API-Key": settings.client_key}).json()["now"][:10])
    window = load_window(settings, START, END, max_visits=1)
    past_gap = dataclasses.replace(window.visits[0], ts=now + timedelta(days=3))
    requests_before = client.xlen(EVENTS_STREAM)

    stats = asyncio.run(simulate([past_gap], url, settings.client_key, settings.ingest_key, concurrency=1,
                                 clock_wait_s=1.0, progress=False))

    assert stats.visits == 0 and not stats.requests and client.xlen(EVENTS_STREAM) == requests_before
    assert "past what the service accepts" in stats.stopped and "STOPPED" in stats.summary()
