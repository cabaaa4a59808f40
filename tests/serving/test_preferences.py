"""Shopper preferences over real HTTP (the session's server, Redis and trained models): PUT/GET
/v1/customers/{id}/preferences, their bounds and scope, erasure, and every answer honouring them (substitutions
"none", never-pairs, preferred brands, dietary exclusions)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pyarrow.parquet as pq
import pytest

from pantry.erasure import customer_views
from pantry.events import MAX_ID, MAX_PRODUCT_ID
from pantry.preferences import DIETARY_RULES, MAX_NEVER_PAIRS, conflicting_products
from pantry.redis_server import sync_client
from serving.answers.shopper import NO_SUBSTITUTIONS

AS_OF = datetime(2017, 10, 1, 12, tzinfo=UTC).isoformat()


def path(customer: int) -> str:
    return f"/v1/customers/{customer}/preferences"


@pytest.fixture(scope="module")
def models(trained_models, feast_applied):
    from pantry.models import load_active

    models, errors = load_active(feast_applied.models_dir)
    assert errors == {}
    return models


@pytest.fixture(scope="module")
def products(feast_applied):
    return pq.read_table(feast_applied.dataset_dir / "products.parquet")


def served(http, route: str, body: dict, version: str) -> dict:
    """The answer once the server answers with `version` (it hot-reloads the session's trained models)."""
    deadline = time.monotonic() + 5
    while True:
        response = http.post(route, json=body)
        assert response.status_code == 200, response.text
        out = response.json()
        if out["model_version"] == version or time.monotonic() > deadline:
            assert out["model_version"] == version, out
            return out
        time.sleep(0.1)


def put(http, customer: int, body: dict) -> dict:
    response = http.put(path(customer), json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_get_returns_what_put_set_and_a_put_replaces_it(http):
    customer = 9_500_001
    before = http.get(path(customer))
    assert before.status_code == 200, before.text
    assert before.json() == {"customer_id": customer, "updated_at": None, "preferences": {
        "substitutions": "allow", "never": [], "preferred_brands": [], "dietary": []}}
    body = {"substitutions": "none", "never": [[1004906, 1033142], [1004906, 1033142], [826249, 1082185]],
            "preferred_brands": ["Private"], "dietary": ["vegetarian", "no_alcohol"]}
    stored = put(http, customer, body)
    got = http.get(path(customer)).json()
    assert got == stored
    assert got["preferences"] == {**body, "never": [[1004906, 1033142], [826249, 1082185]]}  # a repeated pair once
    assert got["updated_at"] is not None
    put(http, customer, {"dietary": ["no_tobacco"]})  # a PUT replaces the whole set
    assert http.get(path(customer)).json()["preferences"] == {
        "substitutions": "allow", "never": [], "preferred_brands": [], "dietary": ["no_tobacco"]}


def test_preferences_need_a_key_with_the_ingest_scope(http, api_keys):
    customer = 9_500_002
    for method in ("GET", "PUT"):
        kwargs = {"json": {"substitutions": "none"}} if method == "PUT" else {}
        assert http.request(method, path(customer), headers={"X-API-Key": ""}, **kwargs).status_code == 401
        refused = http.request(method, path(customer), headers=api_keys.headers("client"), **kwargs)
        assert refused.status_code == 403 and "`ingest` scope" in refused.json()["detail"], refused.text
        assert http.request(method, path(customer), headers=api_keys.headers("ingest"), **kwargs).status_code == 200


@pytest.mark.parametrize(("body", "field"), [
    ({"substitutions": "sometimes"}, "substitutions"),
    ({"never": [[1]]}, "never"),
    ({"never": [[1, 2, 3]]}, "never"),
    ({"never": [[-1, 2]]}, "never"),
    ({"never": [[1, MAX_PRODUCT_ID + 1]]}, "never"),
    ({"never": [[1, "two"]]}, "never"),
    ({"never": [[i, i + 1] for i in range(MAX_NEVER_PAIRS + 1)]}, "never"),
    ({"preferred_brands": ["x" * 65]}, "preferred_brands"),
    ({"preferred_brands": [""]}, "preferred_brands"),
    ({"preferred_brands": [f"b{i}" for i in range(21)]}, "preferred_brands"),
    ({"dietary": ["carnivore"]}, "dietary"),
    ({"dietary": "vegetarian"}, "dietary"),
    ({"favourite_colour": "red"}, "favourite_colour"),
])
def test_a_malformed_or_oversized_body_is_a_400_naming_the_field(http, body, field):
    response = http.put(path(9_500_003), json=body)
    assert response.status_code == 400, response.text
    assert field in response.json()["detail"]
    assert http.get(path(9_500_003)).json()["updated_at"] is None  # nothing was written


def test_a_bad_customer_id_or_body_is_a_4xx(http):
    assert http.put(path(-1), json={}).status_code in (400, 404)
    assert http.put(path(MAX_ID + 1), json={}).status_code == 400
    bad_json = http.put(path(9_500_004), content=b"{nope", headers={"content-type": "application/json"})
    assert bad_json.status_code == 400
    huge = http.put(path(9_500_004), content=b'{"preferred_brands": ["' + b"x" * 2_000_000 + b'"]}',
                    headers={"content-type": "application/json"})
    assert huge.status_code == 413


def _substitutable(models, products, n: int = 4) -> int:
    subs = models.substitutions
    ids = products.column("product_id").to_pylist()
    return next(p for p in ids if len([c for c in subs.candidate_pools([p])[0] if c != p]) >= n)


def test_substitutions_none_gives_no_candidates_and_says_why(http, models, products):
    customer = 9_500_010
    product = _substitutable(models, products)
    body = {"customer_id": customer, "store_id": 9_500_000, "product_ids": [product, 1082185], "k": 3,
            "as_of": AS_OF}
    first = served(http, "/v1/substitutions", body, models.substitutions.version)
    assert first["substitutions"][0]["candidates"] and first["reason"] is None
    put(http, customer, {"substitutions": "none"})
    refused = http.post("/v1/substitutions", json=body).json()
    assert [s["candidates"] for s in refused["substitutions"]] == [[], []]
    assert refused["reason"] == NO_SUBSTITUTIONS and refused["fallback"] == first["fallback"]  # not a failure
    put(http, customer, {"substitutions": "allow"})
    assert http.post("/v1/substitutions", json=body).json()["substitutions"][0]["candidates"]


def test_a_never_pair_is_never_offered(http, models, products):
    customer = 9_500_011
    product = _substitutable(models, products)
    body = {"customer_id": customer, "store_id": 9_500_000, "product_ids": [product], "k": 3, "as_of": AS_OF}
    offered = [c["product_id"] for c in
               served(http, "/v1/substitutions", body, models.substitutions.version)["substitutions"][0]["candidates"]]
    assert offered
    put(http, customer, {"never": [[product, offered[0]], [offered[0], product]]})
    again = [c["product_id"] for c in
             http.post("/v1/substitutions", json=body).json()["substitutions"][0]["candidates"]]
    assert offered[0] not in again and again  # the others still are
    # the pair is for that original only: the same substitute asked for another item is not blocked by it
    assert offered[0] in [c["product_id"] for c in http.post("/v1/substitutions", json={
        **body, "customer_id": 9_500_012}).json()["substitutions"][0]["candidates"]]


def test_preferred_brands_rank_first_among_the_comparable_candidates(http, models, products):
    brand_of = dict(zip(products.column("product_id").to_pylist(), products.column("brand").to_pylist(), strict=True))
    subs = models.substitutions
    ids = products.column("product_id").to_pylist()
    customer = 9_500_013
    for product in ids:  # an item whose 6 best candidates mix both brands, a private one not first
        if len(subs.candidate_pools([product])[0]) < 8:
            continue
        body = {"customer_id": customer, "store_id": 9_500_000, "product_ids": [product], "k": 6, "as_of": AS_OF}
        six = [c["product_id"] for c in
               served(http, "/v1/substitutions", body, subs.version)["substitutions"][0]["candidates"]]
        brands = [brand_of[c] for c in six]
        if len(six) == 6 and brands[0] == "National" and "Private" in brands[1:]:
            break
    else:
        pytest.skip("no item in the slice whose best candidates mix brands")
    put(http, customer, {"preferred_brands": ["private"]})  # brands match case-insensitively
    got = [c["product_id"] for c in http.post("/v1/substitutions", json={**body, "k": 3}).json()[
        "substitutions"][0]["candidates"]]
    expected = ([c for c in six if brand_of[c] == "Private"] + [c for c in six if brand_of[c] != "Private"])[:3]
    assert got == expected and brand_of[got[0]] == "Private"


def test_dietary_preferences_leave_conflicting_products_out_of_every_answer(http, models, products):
    excluded = conflicting_products(products)
    assert set(excluded) == set(DIETARY_RULES) and all(excluded.values())
    customer = 9_500_020  # new: popular items answer
    body = {"customer_id": customer, "k": 30, "as_of": AS_OF}
    popular = [i["product_id"] for i in served(http, "/v1/recommendations", body, models.recommender.version)["items"]]
    value = max(DIETARY_RULES, key=lambda v: len(excluded[v] & set(popular)))
    assert excluded[value] & set(popular), "the slice's popular items have nothing a dietary value excludes"
    put(http, customer, {"dietary": [value]})
    items = [i["product_id"] for i in http.post("/v1/recommendations", json=body).json()["items"]]
    assert len(items) == 30 and not excluded[value] & set(items)
    assert set(items) >= set(popular) - excluded[value]  # only the conflicting ones made room
    # substitutions: an excluded product's candidates (mostly its own kind) never include an excluded one
    subs = models.substitutions
    product = next(p for p in sorted(excluded["vegetarian"]) if len(subs.candidate_pools([p])[0]) >= 4)
    sub_body = {"customer_id": 9_500_021, "store_id": 9_500_000, "product_ids": [product], "k": 3, "as_of": AS_OF}
    before = [c["product_id"] for c in http.post("/v1/substitutions", json=sub_body).json()[
        "substitutions"][0]["candidates"]]
    assert set(before) & excluded["vegetarian"], before
    put(http, 9_500_021, {"dietary": ["vegetarian"]})
    after = [c["product_id"] for c in http.post("/v1/substitutions", json=sub_body).json()[
        "substitutions"][0]["candidates"]]
    assert not set(after) & excluded["vegetarian"]


def test_erasure_removes_the_preferences(http, api_keys, feast_applied, layout):
    customer = 9_500_030
    put(http, customer, {"substitutions": "none", "dietary": ["no_alcohol"]})
    assert "customer_preferences" in customer_views(layout)
    key = layout.key("customer_preferences", (customer,))
    assert sync_client(feast_applied).exists(key)
    forgot = http.post(f"/admin/customers/{customer}/forget", headers=api_keys.headers("admin"))
    assert forgot.status_code == 200, forgot.text
    assert forgot.json()["removed"]["online_rows"] >= 1
    assert not sync_client(feast_applied).exists(key)
    assert http.get(path(customer)).json()["updated_at"] is None


def test_the_feast_sdk_reads_what_put_wrote(http, feast_applied):
    from pantry.featurestore import repo

    customer = 9_500_040
    put(http, customer, {"substitutions": "none", "never": [[1, 2], [3, 4]], "preferred_brands": ["National"],
                         "dietary": ["no_tobacco"]})
    got = repo.store(feast_applied).get_online_features(
        features=[f"customer_preferences:{f}" for f in ("substitutions", "never_original_ids", "never_substitute_ids",
                                                        "preferred_brands", "dietary")],
        entity_rows=[{"customer_id": customer}]).to_dict()
    assert got["substitutions"] == ["none"]
    assert (got["never_original_ids"], got["never_substitute_ids"]) == ([[1, 3]], [[2, 4]])
    assert (got["preferred_brands"], got["dietary"]) == ([["National"]], [["no_tobacco"]])


def test_the_typed_client_sets_and_reads_preferences(api, api_keys):
    from pantry.client import PantryClient, PantryError
    from pantry.schemas import CustomerPreferences

    with PantryClient(api.url, api_key=api_keys.ingest) as pantry:
        stored = pantry.set_preferences(9_500_050, CustomerPreferences(never=[(1, 2)], dietary=["vegetarian"]))
        assert pantry.preferences(9_500_050) == stored and stored.preferences.never == [(1, 2)]
    with PantryClient(api.url, api_key=api_keys.client) as pantry, pytest.raises(PantryError) as refused:
        pantry.preferences(9_500_050)
    assert refused.value.status == 403


def test_dietary_preferences_leave_conflicting_actions_out_of_the_next_best_actions(http, models, products,
                                                                                     feast_applied):
    excluded = conflicting_products(products)["vegetarian"]
    nba = models.next_best_action
    customers = nba.t.customers.tolist()
    for customer in customers[:300]:  # a known shopper whose buy-again nudges include meat or fish
        body = {"customer_id": int(customer), "k": 10, "as_of": AS_OF}
        before = served(http, "/v1/next-best-action", body, nba.version)["actions"]
        if any(a.get("product_id") in excluded for a in before):
            break
    else:
        pytest.fail("no shopper in the slice is nudged toward meat or fish")
    put(http, int(customer), {"dietary": ["vegetarian"]})
    after = http.post("/v1/next-best-action", json=body).json()["actions"]
    assert after and not [a for a in after if a.get("product_id") in excluded]
    # the product actions the diet allows stay, in order (coupons are judged by all their products)
    kept = [a["product_id"] for a in before if a.get("product_id") is not None and a["product_id"] not in excluded]
    assert [a["product_id"] for a in after if a.get("product_id") is not None][: len(kept)] == kept
