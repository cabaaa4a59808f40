"""Cart-aware answers on the real loop: `pantry serve` with the live flow, an `add_to_cart` posted through
POST /v1/events, and the `complete_basket` recommendations and the next-best-action `cross_sell` that follow it
within a second (the flow writes customer_session; both answers read it in their one round trip)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import numpy as np
import pytest
from live_service import serve_live

from pantry.models import registry
from pantry.models.basket import BasketCompleter
from pantry.settings import Settings


@pytest.fixture(scope="module")
def live(feast_applied: Settings, trained_models, tmp_path_factory) -> Iterator[str]:
    """The service and its live flow on database 11 of the session's Redis (empty: the first event starts the
    event clock), once the flow's heartbeat is there (with PANTRY_LIVE_MAX_AGE_S=0 /readyz does not wait for it)."""
    with serve_live(feast_applied, tmp_path_factory.mktemp("cart-live"), db=11,
                    ready=lambda readyz: readyz["live_flow"]["heartbeat_age_s"] is not None) as (url, _env):
        yield url


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
