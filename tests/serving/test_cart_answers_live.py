"""Cart-aware answers on the real loop: `pantry serve` with the live flow, an `add_to_cart` posted through
POST /v1/events, and the `complete_basket` recommendations and the next-best-action `cross_sell` that follow it
within a second (the flow writes customer_session; both answers read it in their one round trip)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import numpy as np
import pytest

from pantry.models import registry
from pantry.models.basket import BasketCompleter
from pantry.redis_server import free_port, sync_client
from pantry.settings import Settings, from_env


@pytest.fixture(scope="module")
def live(feast_applied: Settings, trained_models, tmp_path_factory) -> Iterator[str]:
    """The service and its live flow on database 11 of the session's Redis (empty: the first event starts the
    event clock), once the flow's heartbeat is there (with PANTRY_LIVE_MAX_AGE_S=0 /readyz does not wait for it)."""
    root = tmp_path_factory.mktemp("cart-live")
    data = root / "data"
    data.mkdir()
    (data / "data").symlink_to(feast_applied.dataset_dir)
    shutil.copy(feast_applied.registry_path, data / "registry.db")
    port = free_port()
    env = {**os.environ, "PANTRY_DATA_DIR": str(data), "PANTRY_PORT": str(port), "PANTRY_WORKERS": "1",
           "REDIS_URL": f"redis://127.0.0.1:{feast_applied.embedded_redis_port}/11", "PANTRY_LIVE_MAX_AGE_S": "0",
           "PANTRY_ACCESS_LOG": "off"}
    sync_client(from_env(env)).flushdb()
    log = root / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pantry.cli", "serve"], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                ready = httpx.get(f"{url}/readyz", timeout=2)
                if ready.status_code == 200 and ready.json()["live_flow"]["heartbeat_age_s"] is not None:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_an_item_added_to_the_cart_changes_complete_basket_and_cross_sell_within_a_second(live, api_keys,
                                                                                          feast_applied):
    models = feast_applied.models_dir
    completer = BasketCompleter.load(models / "recommender" / registry.active_version(models, "recommender"))
    product = int(completer.cp.products[np.argmax(np.diff(completer.cp.indptr))])  # the most neighbours
    customer = 6_100_001
    goes_with = f"goes with {product} ("  # then its product type, "in your cart" and how often they go together
    with httpx.Client(base_url=live, timeout=10, headers=api_keys.headers("data")) as http:

        def answers() -> tuple[dict, dict]:
            recs = http.post("/v1/recommendations", json={"customer_id": customer, "k": 5,
                                                          "surface": "complete_basket"})
            nba = http.post("/v1/next-best-action", json={"customer_id": customer, "k": 3})
            assert recs.status_code == 200 and nba.status_code == 200, (recs.text, nba.text)
            return recs.json(), nba.json()

        recs, nba = answers()
        assert recs["fallback"] == "cold_start" and not any(goes_with in i["reason"] for i in recs["items"])
        assert not any(a["action_type"] == "cross_sell" for a in nba["actions"])
        event = {"type": "add_to_cart", "event_id": f"cart-{customer}", "ts": datetime.now(UTC).isoformat(),
                 "customer_id": customer, "store_id": None, "product_id": product, "quantity": 1}
        posted = time.monotonic()
        assert http.post("/v1/events", json={"events": [event]}).status_code == 202
        seen_after = None
        while time.monotonic() - posted < 1.0:
            recs, nba = answers()
            if recs["items"] and goes_with in recs["items"][0]["reason"] and nba["actions"] \
                    and nba["actions"][0]["action_type"] == "cross_sell":
                seen_after = time.monotonic() - posted
                break
            time.sleep(0.02)
        assert seen_after is not None, (recs, nba)
        assert recs["fallback"] is None and product not in {i["product_id"] for i in recs["items"]}
        cross = nba["actions"][0]
        assert cross["product_id"] != product and cross["rationale"].startswith(goes_with)
        assert ") in your cart (bought together in " in cross["rationale"]
        print(f"complete_basket and cross_sell answer the cart {seen_after * 1000:.0f} ms after the POST")
