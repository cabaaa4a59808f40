"""One user class per endpoint, for the latency-vs-load sweeps of `make bench` (paced by --pantry-rate).

Same id pool and contract checks as the scenarios in load_tests/locustfile.py; every probe sends one request
per task so the pacing is exact.
"""

from __future__ import annotations

from locust import constant, task

from load_tests import contract
from load_tests.locustfile import PantryUser, _add_arguments, _build_id_pool  # noqa: F401  (registers the hooks)
from load_tests.pacing import paced_or
from pantry import client as api

FEATURE_SERVICE = "recommendations_v1"


class Probe(PantryUser):
    abstract = True
    wait_time = paced_or(constant(0))


class RecommendationsProbe(Probe):
    @task
    def go(self) -> None:
        self.recommend(self.ids.shopper(), "for_you", k=10)


class SubstitutionsProbe(Probe):
    @task
    def go(self) -> None:
        shopper = self.ids.shopper()
        # One item (the common case): the multi-item rule (no asked item substitutes another) is the load
        # scenarios' job (GroceryOrderFlowUser); a violation here would make the latency figures fail instead.
        asked = self.ids.browse(shopper, 1)[:1]
        self.post(api.substitutions(shopper.customer_id, shopper.store_id, asked, k=3),
                  lambda s, b: contract.check_substitutions(s, b, k=3, asked=asked))


class NextBestActionProbe(Probe):
    @task
    def go(self) -> None:
        self.ask_next_best_action(self.ids.shopper(), "app", k=3, store=True)


def _features(user: PantryUser) -> api.Call:
    shopper = user.ids.shopper()  # the service reads customer and store views: both join keys
    return api.features({"customer_id": [shopper.customer_id], "store_id": [shopper.store_id]},
                        feature_service=FEATURE_SERVICE)


def _ok(status: int, body: bytes) -> None:
    if status != 200:
        raise contract.ContractViolation(f"status {status}: {body[:200]!r}")


class FeaturesProbe(Probe):
    """pantry's /v1/features: the drop-in for Feast's feature server."""

    @task
    def go(self) -> None:
        self.post(_features(self), _ok)


class FeastServeProbe(Probe):
    """The same request to `feast serve` (its /get-online-features)."""

    @task
    def go(self) -> None:
        call = _features(self)  # the same body, to Feast's route
        self.post(api.Call("POST", "/get-online-features", call.body, call.decode), _ok)


class HelloProbe(Probe):
    """The ceiling: a hello-world on the same framework and server."""

    @task
    def go(self) -> None:
        self.post(api.Call("POST", "/hello", b"{}", bytes), _ok)
