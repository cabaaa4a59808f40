"""Serving part of `make bench`: the latency and throughput targets of the HTTP API, with the asyncio client.

Against a running `pantry serve` (the harness's), for each endpoint: open loop at 300 requests/s (latency from the
scheduled send time: openloop.py), then closed loop with 48 connections (saturation). Then /v1/recommendations
with an experiment running and outcomes streaming in (experiment_overhead.py), then the same /v1/features
requests against `feast serve` on the same Redis and registry (the peer), and a hello-world on the same framework
and server (the ceiling of this stack and client on this machine). Request bodies draw real ids from the dataset.

    python -m load_tests.bench.serving http://127.0.0.1:8000     # against a running pantry; prints the figures
"""

from __future__ import annotations

import asyncio
import random
import sys
from collections.abc import Callable

import httpx
import msgspec

from load_tests import server
from load_tests.bench import experiment_overhead, peers
from load_tests.bench.figures import EndpointLoad, Load, ServingFigures
from load_tests.bench.openloop import closed_loop, open_loop
from load_tests.keys import key_for
from pantry.models.variants import ensure_baseline
from pantry.scoring import ModelError
from pantry.settings import Settings

RATE = 300.0
STEP_S = 6.0
QUICK_STEP_S = 3.0
SATURATION_CONNECTIONS = 48
WARMUP_CONNECTIONS, WARMUP_S = 8, 1.0  # every worker's lazy loads happen before anything is measured
CLIENT = "asyncio HTTP/1.1 keep-alive, same machine"
_json = msgspec.json.Encoder()


class Requests:
    """Request bodies from the dataset's ids (households with their stores, products), seeded: same run, same ids."""

    def __init__(self, settings: Settings, seed: int = 7):
        from pantry import dataset

        events = dataset.read_events(settings, columns=["customer_id", "store_id", "product_id"]).to_pandas()
        events = events.dropna()
        self.rng = random.Random(seed)
        self.customers = events["customer_id"].astype(int).unique().tolist()
        self.stores = events["store_id"].astype(int).unique().tolist()
        self.products = events["product_id"].astype(int).unique().tolist()
        self.pairs = list(zip(events["customer_id"].astype(int), events["store_id"].astype(int), strict=True))
        # what each household buys: the items an order of theirs may be missing (deployed.py)
        self.bought = {int(c): sorted(set(map(int, g))) for c, g in events.groupby("customer_id")["product_id"]}

    def recommendations(self) -> bytes:
        customer, store = self.rng.choice(self.pairs)
        return _json.encode({"customer_id": customer, "store_id": store, "k": 10, "surface": "for_you"})

    def substitutions(self) -> bytes:
        customer, store = self.rng.choice(self.pairs)
        return _json.encode({"customer_id": customer, "store_id": store,
                             "product_ids": self.rng.sample(self.products, 3), "k": 3})

    def next_best_action(self) -> bytes:
        return _json.encode({"customer_id": self.rng.choice(self.customers), "channel": "app", "k": 3})

    def features(self) -> bytes:
        return _json.encode({"feature_service": "recommendations_v1",
                             "entities": {"customer_id": [self.rng.choice(self.customers)],
                                          "store_id": [self.rng.choice(self.stores)]}})


def endpoints(reqs: Requests) -> dict[str, Callable[[], bytes]]:
    return {"/v1/recommendations": reqs.recommendations, "/v1/substitutions": reqs.substitutions,
            "/v1/next-best-action": reqs.next_best_action, "/v1/features": reqs.features,
            "/get-online-features": reqs.features}  # the Feast SDK's route: the same request, the same answer


async def measure_endpoint(base_url: str, path: str, bodies: Callable[[], bytes], step_s: float,
                           api_key: str) -> EndpointLoad:
    await closed_loop(base_url, path, bodies, WARMUP_CONNECTIONS, WARMUP_S, api_key=api_key)
    at_rate = await open_loop(base_url, path, bodies, RATE, step_s, api_key=api_key)
    saturation = await closed_loop(base_url, path, bodies, SATURATION_CONNECTIONS, step_s, api_key=api_key)
    return EndpointLoad(at_rate=at_rate, saturation=saturation)


def measure_peer(name: str, started, path: str, bodies: Callable[[], bytes], step_s: float,
                 notes: list[str]) -> Load | None:
    """Saturation of a peer server (`started`: its context manager), after a short warm-up; None if it did not start."""
    try:
        with started as url:
            asyncio.run(closed_loop(url, path, bodies, 4, 2.0))
            load = asyncio.run(closed_loop(url, path, bodies, SATURATION_CONNECTIONS, step_s))
    except server.ServerError as exc:
        notes.append(f"{name}: did not start ({str(exc).splitlines()[0][:200]})")
        return None
    print(f"serving bench {name}: {load}", flush=True)
    return load


def run(settings: Settings, base_url: str | None = None, quick: bool = False) -> ServingFigures:
    base_url = base_url or f"http://{settings.host}:{settings.port}"
    step_s = QUICK_STEP_S if quick else STEP_S
    work = settings.data_dir / "serving-bench"
    work.mkdir(parents=True, exist_ok=True)
    reqs = Requests(settings)
    measured: dict[str, EndpointLoad] = {}
    for path, bodies in endpoints(reqs).items():
        measured[path] = asyncio.run(measure_endpoint(base_url, path, bodies, step_s, key_for(settings, path)))
        print(f"serving bench {path}: {measured[path]}", flush=True)
    closed, closed_note = None, ""
    try:
        treatment = ensure_baseline(settings.models_dir, "recommender", "popularity")
        closed = experiment_overhead.run(settings, base_url, reqs.recommendations, RATE,
                                         step_s if quick else experiment_overhead.ROUND_S, treatment)
        print(f"serving bench closed loop: {closed}", flush=True)
    except (RuntimeError, ModelError, httpx.HTTPError, KeyError) as exc:
        closed_note = f"not run ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        print(f"serving bench closed loop: {closed_note}", flush=True)
    notes: list[str] = []
    feast = measure_peer("feast serve", peers.feast_serve(settings, work / "feast_serve.log", settings.workers),
                         "/get-online-features", reqs.features, step_s, notes)
    hello = measure_peer("hello-world", peers.hello_world(work / "hello.log", settings.workers), "/hello",
                         lambda: b"{}", step_s, notes)
    return ServingFigures(rate_rps=RATE, step_s=step_s, connections=SATURATION_CONNECTIONS, client=CLIENT,
                          endpoints=measured, feast_serve=feast, hello_world=hello, peer_notes=notes,
                          experiment_overhead=closed, experiment_overhead_note=closed_note)


if __name__ == "__main__":
    from pantry.settings import get_settings

    figures = run(get_settings(), sys.argv[1] if len(sys.argv) > 1 else None)
    print(msgspec.json.format(msgspec.json.encode(figures)).decode())
