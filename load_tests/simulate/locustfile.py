"""Locust: simulated shoppers on real data (`pantry load --simulate`, or
`locust -f load_tests/simulate/locustfile.py --host URL`).

Each `SimulatedShopperUser` takes the next held-out visit from one iterator shared by the users of its process and
plays it (load_tests/simulate/script.py: the same calls and outcome rules as `pantry simulate`), under the same
ordering rule (schedule.py: time order, a household's visits one after the other, visits in flight within
PANTRY_SIMULATE_WINDOW_S of event time). The visits are those in [PANTRY_SIMULATE_FROM, PANTRY_SIMULATE_TO)
(default: from the service clock's now, 30 days). A user whose iterator is exhausted stops. Run it in one Locust
process: each process would replay the same visits. Unlike `pantry simulate`, it does not wait for the service
clock: at high rates the live flow may fall a day of event time behind and events are rejected (400, counted).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import gevent
import httpx
from locust import constant, events, task
from locust.contrib.fasthttp import FastHttpUser
from locust.exception import StopUser

from load_tests.keys import key_for
from load_tests.pacing import paced_or
from load_tests.simulate.schedule import Schedule
from load_tests.simulate.script import OfferMemory, Reply, visit_script
from load_tests.simulate.visits import Visit, load_window, parse_day
from pantry import client as api
from pantry import dataset
from pantry.settings import Settings, get_settings

DEFAULT_DAYS = 30


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    parser.add_argument("--pantry-rate", type=float, default=0.0,
                        help="Target total requests/s across all users (0 = as fast as the visits allow).")


def window_start(settings: Settings, host: str | None) -> datetime:
    """PANTRY_SIMULATE_FROM, else the service clock's now (GET /v1/clock: the visits that follow what the service
    has seen, so none is late), else the data's first day."""
    if settings.simulate_from:
        return parse_day(settings.simulate_from)
    if host:
        try:
            resp = httpx.get(f"{host}/v1/clock", headers={"X-API-Key": key_for(settings, "/v1/clock")}, timeout=5)
            if resp.status_code == 200:
                return datetime.fromisoformat(resp.json()["now"].replace("Z", "+00:00"))
        except (httpx.HTTPError, KeyError, ValueError):
            pass
    return parse_day(dataset.manifest(settings).first_event[:10])


class Feed:
    """The visits of this process, handed out under the schedule's rule."""

    def __init__(self, visits: list[Visit], window_s: float):
        self.visits, self.pos = visits, 0
        self.schedule = Schedule(max_in_flight=1 << 30, window_s=window_s)  # Locust's user count bounds it
        self.memory = OfferMemory()

    def take(self) -> Visit | None:
        while self.pos < len(self.visits):
            visit = self.visits[self.pos]
            if self.schedule.can_start(visit):
                self.pos += 1
                self.schedule.start(visit)
                return visit
            gevent.sleep(0.005)
        return None


_feed: Feed | None = None


@events.init.add_listener
def _build_feed(environment: Any, **_: Any) -> None:
    global _feed
    settings = get_settings()
    start = window_start(settings, environment.host)
    end = parse_day(settings.simulate_to) if settings.simulate_to else start + timedelta(days=DEFAULT_DAYS)
    _feed = Feed(load_window(settings, start, end).visits, settings.simulate_window_s)
    gevent.get_hub().loop.update_now()  # the load blocked the loop: keep it out of --run-time (as locustfile.py)


class SimulatedShopperUser(FastHttpUser):
    wait_time = paced_or(constant(0))

    def on_start(self) -> None:
        self.requests_since_wait = 0
        settings = get_settings()
        self.headers = {path: {"content-type": "application/json", "X-API-Key": key_for(settings, path)}
                        for path in ("/v1/recommendations", "/v1/next-best-action", "/v1/substitutions",
                                     "/v1/events")}

    def send(self, call: api.Call) -> Reply:
        self.requests_since_wait += 1
        with self.client.post(call.path, data=call.body, headers=self.headers[call.path], name=call.path,
                              catch_response=True) as resp:
            status = resp.status_code or 0
            if 200 <= status < 300:
                resp.success()
            else:
                resp.failure(f"status {status}: {(resp.content or b'')[:200]!r}")
            return Reply(status, resp.content or b"")

    @task
    def visit(self) -> None:
        assert _feed is not None
        visit = _feed.take()
        if visit is None:
            raise StopUser()
        try:
            script = visit_script(visit, _feed.memory)
            call = next(script)
            while True:
                call = script.send(self.send(call))
        except StopIteration:
            pass
        finally:
            _feed.schedule.finish(visit)
