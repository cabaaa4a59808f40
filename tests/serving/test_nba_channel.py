"""The next-best-action channel rule over real HTTP (serving/answers/channel.py): with an item in the shopper's cart
(a customer_session row in the online store), `app` and `web` lead with the cross-sell, `email` never carries one
and still answers k actions; `in_store` without a store_id is a 400 that names it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from pantry.models import registry
from pantry.models.basket import BasketCompleter
from pantry.models.next_best_action import load_tables
from pantry.settings import Settings

WRITTEN = datetime(2017, 8, 20, 12, tzinfo=UTC)  # before the trained models' cut; the session view's TTL is an hour
AS_OF = (WRITTEN + timedelta(minutes=5)).isoformat()


def _cart_scene(settings: Settings, write_features) -> tuple[int, int]:
    """A customer with buy-again nudges and a cart holding the product with the most basket neighbours."""
    directory = settings.models_dir / "next_best_action" / registry.active_version(settings.models_dir,
                                                                                   "next_best_action")
    tables = load_tables(directory)
    with_nudges = np.flatnonzero(np.diff(tables.nudge_indptr) >= 3)
    customer = int(tables.customers[with_nudges[0]])
    completer = BasketCompleter.load(directory)
    assert completer is not None, "the next-best-action version has no basket completer"
    product = int(completer.cp.products[np.argmax(np.diff(completer.cp.indptr))])
    write_features("customer_session", (customer,), {"session_events": 1, "session_product_ids": [product],
                                                     "cart_product_ids": [product]}, WRITTEN)
    return customer, product


def test_the_channel_decides_the_kinds_of_action(http, feast_applied, trained_models, write_features):
    customer, product = _cart_scene(feast_applied, write_features)

    def ask(channel: str, **extra) -> list[dict]:
        response = http.post("/v1/next-best-action", json={"customer_id": customer, "k": 3, "channel": channel,
                                                           "as_of": AS_OF, **extra})
        assert response.status_code == 200, response.text
        return response.json()["actions"]

    for online in ("app", "web"):
        actions = ask(online)
        assert actions[0]["action_type"] == "cross_sell", actions
        assert actions[0]["rationale"].startswith(f"goes with {product}")
    email = ask("email")
    assert len(email) == 3 and all(a["action_type"] in ("coupon", "buy_again") for a in email), email
    # the same actions as online, less the cross-sell, and one more of the model's list in its place
    assert [a for a in ask("app") if a["action_type"] != "cross_sell"] == email[:2]


def test_in_store_needs_the_store(http, trained_models):
    response = http.post("/v1/next-best-action", json={"customer_id": 1, "channel": "in_store", "as_of": AS_OF})
    assert response.status_code == 400
    assert response.json()["detail"] == "channel in_store needs store_id (the store the shopper is in)"
    with_store = http.post("/v1/next-best-action", json={"customer_id": 1, "channel": "in_store", "store_id": 367,
                                                         "as_of": AS_OF})
    assert with_store.status_code == 200, with_store.text
