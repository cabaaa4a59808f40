"""Substitutions and next-best-action with the trained models: stock rule and campaign governance."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from pantry import dataset


@pytest.fixture(scope="module")
def models(trained_models, feast_applied):
    from pantry.models import load_active

    models, errors = load_active(feast_applied.models_dir)
    assert errors == {}
    return models


def _wait_served(http, path: str, body: dict, version: str, timeout_s: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        out = http.post(path, json=body).json()
        if out.get("model_version") == version or time.monotonic() > deadline:
            return out
        time.sleep(0.1)


def test_substitutions_never_offer_out_of_stock(http, models, feast_applied, write_features):
    subs = models.substitutions
    products = dataset.read_table(feast_applied, "products")["product_id"].astype(int).tolist()
    product, pool = next((p, subs.candidate_pools([p])[0]) for p in products if len(subs.candidate_pools([p])[0]) >= 4)
    pool = [c for c in pool if c != product]
    store, customer = 9_300_001, 9_300_002
    as_of = datetime(2017, 10, 1, 12, tzinfo=UTC)
    body = {"customer_id": customer, "store_id": store, "product_ids": [product], "k": 3, "as_of": as_of.isoformat()}
    first = _wait_served(http, "/v1/substitutions", body, subs.version)
    assert first["model_version"] == subs.version, first
    offered = [c["product_id"] for c in first["substitutions"][0]["candidates"]]
    assert offered and product not in offered
    # the store runs out of everything it offered: none of it may be offered again
    for c in offered:
        write_features("store_product", (store, c), {"on_hand": 0, "units_28d": 9}, as_of - timedelta(hours=1))
    second = http.post("/v1/substitutions", json=body).json()
    again = [c["product_id"] for c in second["substitutions"][0]["candidates"]]
    assert not set(again) & set(offered)
    assert again, "other candidates of the pool are still offered"
    bad = http.post("/v1/substitutions", json={**body, "product_ids": []})
    assert bad.status_code == 400 and "product_ids" in bad.json()["detail"]
    assert http.post("/v1/substitutions", json={**body, "product_ids": list(range(51))}).status_code == 400


def _enrolments(settings) -> list[tuple[int, int, datetime]]:
    camps = dataset.read_table(settings, "campaigns")
    desc = dataset.read_table(settings, "campaign_descriptions")
    merged = camps.merge(desc, on="campaign_id")
    out = []
    for rec in merged.itertuples(index=False):
        mid = rec.start_date + (rec.end_date - rec.start_date) / 2
        out.append((int(rec.customer_id), int(rec.campaign_id), pd.Timestamp(mid).to_pydatetime()))
    return out[:40]


def test_next_best_action_offers_only_approved_active_campaigns(http, api_keys, models, feast_applied):
    nba = models.next_best_action
    enrolments = _enrolments(feast_applied)
    assert enrolments
    for cid in {c for _, c, _ in enrolments}:
        assert http.post(f"/admin/campaigns/{cid}/approve", headers=api_keys.headers("merchandiser")).status_code == 200
    time.sleep(1.5)  # approvals reach every worker within a second

    def offered() -> dict[tuple[int, str], set[int]]:
        out = {}
        for customer, _, when in enrolments:
            body = {"customer_id": customer, "k": 5, "as_of": when.isoformat()}
            answer = _wait_served(http, "/v1/next-best-action", body, nba.version)
            assert answer["model_version"] == nba.version
            out[(customer, when.isoformat())] = {a["campaign_id"] for a in answer["actions"] if "campaign_id" in a}
        return out

    approved = offered()
    all_offered = set().union(*approved.values())
    assert all_offered, "with every campaign approved, some coupon is offered"
    desc = dataset.read_table(feast_applied, "campaign_descriptions").set_index("campaign_id")
    for (_, when), campaign_ids in approved.items():
        at = pd.Timestamp(when)
        for cid in campaign_ids:  # every offered campaign is active at `now`
            assert desc.loc[cid, "start_date"] <= at <= desc.loc[cid, "end_date"]

    victim = next(iter(all_offered))
    assert http.post(f"/admin/campaigns/{victim}/reject", headers=api_keys.headers("merchandiser")).status_code == 200
    time.sleep(1.5)
    after = offered()
    assert victim not in set().union(*after.values())
    http.post(f"/admin/campaigns/{victim}/approve", headers=api_keys.headers("merchandiser"))


def test_substitutions_never_offer_requested_cart_or_unstocked_items(http, models, feast_applied, write_features):
    """Asking for several products at once: none of them, nor a cart item, nor a zero-stock candidate is offered."""
    subs = models.substitutions
    products = dataset.read_table(feast_applied, "products")["product_id"].astype(int).tolist()
    product, pool = next((p, subs.candidate_pools([p])[0]) for p in products if len(subs.candidate_pools([p])[0]) >= 6)
    pool = [c for c in pool if c != product][:6]
    also_requested, in_cart, zero_prob, *kept = pool
    store, customer = 9_300_011, 9_300_012
    as_of = datetime(2017, 10, 1, 12, tzinfo=UTC)
    hour_ago = as_of - timedelta(hours=1)
    # every other pool member is out of stock, so only the offenders and `kept` remain to be offered
    for c in subs.candidate_pools([product])[0]:
        if c not in (also_requested, in_cart, zero_prob, *kept):
            write_features("store_product", (store, c), {"on_hand": 0, "units_28d": 9}, hour_ago)
    write_features("store_product", (store, zero_prob), {"on_hand": 4, "in_stock_prob": 0.0, "units_28d": 50},
                   hour_ago)
    write_features("customer_session", (customer,), {"session_events": 2, "cart_product_ids": [in_cart]},
                   as_of - timedelta(minutes=1))
    body = {"customer_id": customer, "store_id": store, "product_ids": [product, also_requested], "k": 5,
            "as_of": as_of.isoformat()}
    answer = _wait_served(http, "/v1/substitutions", body, subs.version)
    assert answer["model_version"] == subs.version, answer
    offered = {c["product_id"] for s in answer["substitutions"] for c in s["candidates"]}
    assert not offered & {product, also_requested, in_cart, zero_prob}, answer
    first = {c["product_id"] for c in answer["substitutions"][0]["candidates"]}
    assert first and first <= set(kept), answer


def test_substitutions_rank_the_customers_own_items_beyond_the_pool_and_read_their_stock(
        http, models, feast_applied, write_features):
    """An item of the type the customer buys (live repertoire row) that the pool's first MAX_POOL leave out is read
    from the store and ranked; out of stock, it is never offered."""
    import numpy as np

    from serving.answers.substitutions import MAX_POOL

    subs = models.substitutions
    cat = subs.cat
    product, theirs = None, None
    for i in np.argsort(-cat.buyers):
        pool = subs.candidate_pools([int(subs.products[i])])[0][:MAX_POOL]
        same_type = subs.products[(cat.type_code == cat.type_code[i]) & (cat.type_code >= 0)].tolist()
        outside = [p for p in same_type if p not in pool and p != int(subs.products[i])]
        if pool and outside:
            product, pool, theirs = int(subs.products[i]), pool, outside[0]
            break
    assert product is not None, "no type with an item outside its pool's first 20 in the slice"
    store, customer = 9_300_021, 9_300_022
    as_of = datetime(2017, 10, 1, 12, tzinfo=UTC)
    hour_ago = as_of - timedelta(hours=1)
    for c in pool:  # the pool is sold out: only the customer's own item can be offered
        write_features("store_product", (store, c), {"on_hand": 0, "units_28d": 9}, hour_ago)
    write_features("customer_repertoire", (customer,), {"repertoire_product_ids": [theirs],
                                                        "repertoire_scores": [3.0]}, hour_ago)
    body = {"customer_id": customer, "store_id": store, "product_ids": [product], "k": 3, "as_of": as_of.isoformat()}
    answer = _wait_served(http, "/v1/substitutions", body, subs.version)
    offered = answer["substitutions"][0]["candidates"]
    assert [c["product_id"] for c in offered] == [theirs], answer
    assert offered[0]["reason"] == "you have bought this before"
    write_features("store_product", (store, theirs), {"on_hand": 0, "units_28d": 2}, hour_ago)
    again = http.post("/v1/substitutions", json=body).json()
    assert again["substitutions"][0]["candidates"] == [], again
