"""Locust scenarios for pantry: who uses the service, how often, and what every answer must look like.

    locust -f load_tests/locustfile.py --host http://127.0.0.1:8000      (or `pantry load`, which adds SLO gates)

Users and their share of the crowd (class weights):
  StorefrontUser        5  web shop: for_you and discover recommendations at a store, product views as events
  MobileAppUser         3  app: buy_again recommendations, next-best-action on the app channel, a few new installs
  GroceryOrderFlowUser  1  an order being picked: cart -> items out of stock -> substitutions -> feedback
  MarketingUser         1  campaign tooling: next-best-action for email and web
Ids come from the real data (load_tests.id_pool). Each request carries the API key its path needs (load_tests.keys:
PANTRY_CLIENT_KEY, PANTRY_INGEST_KEY, PANTRY_FEATURES_KEY; `pantry load` sets them). Every answer is checked against
load_tests.contract; a violation is a failure named "contract: ...".
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import gevent
import httpx
from locust import between, events, task
from locust.contrib.fasthttp import FastHttpUser

from load_tests import contract
from load_tests.id_pool import IdPool, Shopper, pool
from load_tests.keys import key_for
from load_tests.pacing import paced_or
from pantry import client as api
from pantry import events as ev
from pantry.settings import get_settings

JSON_HEADERS = {"content-type": "application/json"}
_headers: dict[str, dict[str, str]] = {}


def headers(path: str) -> dict[str, str]:
    """JSON content type and the API key `path` needs (looked up once per path)."""
    if path not in _headers:
        _headers[path] = {**JSON_HEADERS, "X-API-Key": key_for(get_settings(), path)}
    return _headers[path]


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    parser.add_argument(
        "--pantry-rate",
        type=float,
        default=0.0,
        help="Target total requests/s across all users (0 = realistic think times instead).",
    )


_event_ts: list[datetime] = []  # the time the users' events carry (set at init)


def event_time(host: str | None, last_event: datetime) -> datetime:
    """The data's last event time, or the service clock's `now` if that is earlier (a demo trained and streamed
    `--until` a date accepts no event past its clock plus the skew): events never run ahead of what is accepted."""
    if not host:
        return last_event
    try:
        clock = httpx.get(f"{host}/v1/clock", headers=headers("/v1/events"), timeout=10).json()
        return min(last_event, datetime.fromisoformat(clock["now"].replace("Z", "+00:00")))
    except (httpx.HTTPError, KeyError, ValueError):
        return last_event  # the run reports what the service says about the events


@events.init.add_listener
def _build_id_pool(environment: Any, **_: Any) -> None:
    ids = pool()  # once per process, before any user starts, so no request waits behind it
    _event_ts[:] = [event_time(environment.host, ids.last_event)]
    # Building the pool blocks the event loop; refresh gevent's cached clock so the --run-time timer, armed right
    # after this, does not count the build time as run time (it would end the run early).
    gevent.get_hub().loop.update_now()


class PantryUser(FastHttpUser):
    abstract = True
    think: Callable[[Any], float] = between(1, 4)

    def on_start(self) -> None:
        self.ids: IdPool = pool()
        self.requests_since_wait = 0

    # ---- plumbing ----------------------------------------------------------------------------------------------

    def post(self, call: api.Call, check: Callable[[int, bytes], Any], name: str | None = None) -> Any:
        """Send a pantry.client call through Locust's session, check the answer; a failed check is a Locust failure.
        Returns the decoded answer or None. (Locust's session, not pantry.client's transport: Locust times and
        counts what its session sends, and a load test must see every 429/503 rather than retry it away.)"""
        self.requests_since_wait += 1
        with self.client.post(
            call.path, data=call.body, headers=headers(call.path), name=name or call.path, catch_response=True
        ) as resp:
            try:
                answer = check(resp.status_code, resp.content or b"")
            except contract.ContractViolation as exc:
                resp.failure(f"contract: {exc}")
                return None
            resp.success()
            return answer

    def send_events(self, batch: list[ev.BaseEvent]) -> None:
        n = len(batch)
        self.post(api.send_events(batch), lambda s, b: contract.check_accepted(s, b, sent=n))

    def event_fields(self, shopper: Shopper | None) -> dict[str, Any]:
        return {
            "event_id": f"load-{uuid.uuid4().hex}",
            "ts": _event_ts[0] if _event_ts else self.ids.last_event,
            "customer_id": shopper.customer_id if shopper else None,
            "store_id": shopper.store_id if shopper else None,
        }

    def recommend(self, shopper: Shopper, surface: str, k: int, store: bool = True, exclude: list[int] | None = None,
                  unknown: bool = False) -> contract.Recommendations | None:
        customer_id = self.ids.unknown_customer_id if unknown else shopper.customer_id
        return self.post(
            api.recommendations(customer_id, store_id=shopper.store_id if store else None, k=k, surface=surface,
                                exclude_product_ids=exclude or ()),
            lambda s, b: contract.check_recommendations(
                s, b, k=k, surface=surface, exclude=exclude or (), bought=() if unknown else shopper.bought,
                unknown_customer=unknown,
            ),
        )

    def ask_next_best_action(self, shopper: Shopper, channel: str, k: int, store: bool) -> None:
        call = api.next_best_action(shopper.customer_id, store_id=shopper.store_id if store else None, channel=channel,
                                    k=k)
        self.post(call, lambda s, b: contract.check_next_best_actions(s, b, k=k))


class StorefrontUser(PantryUser):
    weight = 5
    wait_time = paced_or(between(2, 8))

    @task(5)
    def for_you(self) -> None:
        shopper = self.ids.shopper()
        answer = self.recommend(shopper, "for_you", k=self.ids.rng.choice((8, 10, 12, 20)))
        if answer and answer.items and self.ids.rng.random() < 0.3:  # the shopper opens one of the suggestions
            product = self.ids.rng.choice(answer.items).product_id
            self.send_events([ev.ProductView(product_id=product, **self.event_fields(shopper))])

    @task(2)
    def discover(self) -> None:
        shopper = self.ids.shopper()
        seen = self.ids.browse(shopper, 2)
        self.recommend(shopper, "discover", k=self.ids.rng.choice((6, 10)), exclude=seen)

    @task(3)
    def browse(self) -> None:
        shopper = self.ids.shopper()
        views = [ev.ProductView(product_id=p, **self.event_fields(shopper)) for p in self.ids.browse(shopper, 3)]
        self.send_events(views)


class MobileAppUser(PantryUser):
    weight = 3
    wait_time = paced_or(between(1, 5))

    @task(5)
    def buy_again(self) -> None:
        self.recommend(self.ids.shopper(), "buy_again", k=10, store=self.ids.rng.random() < 0.7)

    @task(3)
    def next_best_action(self) -> None:
        self.ask_next_best_action(self.ids.shopper(), "app", k=3, store=True)

    @task(1)
    def new_install(self) -> None:
        """A household the service has never seen: the answer must say it fell back (cold start)."""
        self.recommend(self.ids.shopper(), "for_you", k=10, unknown=True)


class GroceryOrderFlowUser(PantryUser):
    weight = 1
    wait_time = paced_or(between(5, 15))

    @task
    def pick_order(self) -> None:
        rng = self.ids.rng
        shopper = self.ids.shopper()
        cart = self.ids.browse(shopper, rng.randint(6, 12))
        self.send_events(
            [ev.AddToCart(product_id=p, quantity=rng.randint(1, 3), **self.event_fields(shopper)) for p in cart]
        )
        out_of_stock = rng.sample(cart, k=min(len(cart), rng.randint(1, 3)))
        store_fields = {**self.event_fields(None), "store_id": shopper.store_id}
        self.send_events(
            [ev.Inventory(product_id=p, on_hand=0, **{**store_fields, "event_id": f"load-{uuid.uuid4().hex}"})
             for p in out_of_stock]
        )
        k = 3
        answer: contract.Substitutions | None = self.post(
            api.substitutions(shopper.customer_id, shopper.store_id, out_of_stock, k=k),
            lambda s, b: contract.check_substitutions(s, b, k=k, asked=out_of_stock),
        )
        if answer is None:
            return
        # The customer accepts the top substitute most of the time, sometimes another, sometimes none.
        feedback: list[ev.BaseEvent] = []
        for sub in answer.substitutions:
            if not sub.candidates:
                continue
            roll = rng.random()
            chosen = sub.candidates[0] if roll < 0.7 else rng.choice(sub.candidates)
            accepted = roll < 0.9
            feedback.append(ev.SubstitutionFeedback(
                original_product_id=sub.product_id, substitute_product_id=chosen.product_id, accepted=accepted,
                **self.event_fields(shopper),
            ))
        # The shelf is restocked afterwards, so a long run does not empty every store.
        feedback += [ev.Inventory(product_id=p, on_hand=rng.randint(5, 40),
                                  **{**store_fields, "event_id": f"load-{uuid.uuid4().hex}"}) for p in out_of_stock]
        self.send_events(feedback)


class MarketingUser(PantryUser):
    weight = 1
    wait_time = paced_or(between(1, 3))

    @task(3)
    def email(self) -> None:
        self.ask_next_best_action(self.ids.shopper(), "email", k=self.ids.rng.choice((1, 3, 5)), store=False)

    @task(2)
    def web(self) -> None:
        self.ask_next_best_action(self.ids.shopper(), "web", k=3, store=True)
