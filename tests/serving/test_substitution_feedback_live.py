"""Substitution feedback learned online, end to end: a real server with the trained models and a real live flow
(`pantry stream live`) on a Redis of their own (tests/serving/test_kpis.py's `loop`). A rejection posted through
POST /v1/events takes the rejected substitute out of that customer's answers for that item within a second; another
customer is still offered it, ranked lower by the pair's acceptance rate; the Feast SDK reads both new views."""

from __future__ import annotations

import math
import time
from datetime import timedelta

import pytest

from pantry import dataset, events
from pantry.featurestore import repo
from pantry.models import load_active
from tests.serving.test_kpis import loop, own_settings_module  # noqa: F401  (the module's server and live flow)
from tests.streaming.test_live import wait_for

pytestmark = pytest.mark.timeout(600)

STORE = 400_001  # no stock rows: every candidate is offered at the unknown-stock probability
REJECTER, OTHER = 9_400_002, 9_400_003


def _candidates(loop, customer: int, product: int) -> list[dict]:  # noqa: F811
    r = loop.http.post("/v1/substitutions", json={"customer_id": customer, "store_id": STORE,
                                                  "product_ids": [product], "k": 3})
    assert r.status_code == 200, r.text
    return r.json()["substitutions"][0]["candidates"]


def test_a_rejection_is_never_offered_again_within_a_second_and_lowers_the_pair(loop):  # noqa: F811
    subs, errors = load_active(loop.settings.models_dir)
    assert errors == {}
    model = subs.substitutions
    products = dataset.read_table(loop.settings, "products")["product_id"].astype(int).tolist()
    product = next(p for p in products if len(model.candidate_pools([p])[0]) >= 6)
    before = wait_for(lambda: _candidates(loop, REJECTER, product), 10.0)
    assert len(before) == 3, before
    victim = before[0]["product_id"]

    sent = time.monotonic()
    loop.post(events.SubstitutionFeedback(
        event_id=f"fb-{time.time_ns()}", ts=loop.t0 + timedelta(minutes=1), customer_id=REJECTER, store_id=STORE,
        original_product_id=product, substitute_product_id=victim, accepted=False))
    gone = wait_for(lambda: victim not in [c["product_id"] for c in _candidates(loop, REJECTER, product)], 1.0, 0.01)
    elapsed = time.monotonic() - sent
    assert gone, f"the rejected substitute is still offered after {elapsed:.2f} s; flow log:\n{loop.flow_log()}"
    assert elapsed < 1.0
    print(f"rejection posted -> no longer offered: {elapsed * 1000:.0f} ms")  # shown with -s
    after = _candidates(loop, REJECTER, product)
    assert len(after) == 3 and victim not in [c["product_id"] for c in after]

    # another customer is still offered it, its score moved by log(rate / 0.5): one rejection, Beta(1, 1) -> 1/3
    theirs = {c["product_id"]: c["score"] for c in _candidates(loop, OTHER, product)}
    expected = before[0]["score"] + math.log((1 / 3) / 0.5)
    assert victim in theirs and theirs[victim] == pytest.approx(expected, abs=1e-4), (theirs, before)

    # the plain Feast SDK reads both views
    fs = repo.store(loop.settings)
    mine = fs.get_online_features(
        features=["customer_substitution_feedback:original_ids", "customer_substitution_feedback:substitute_ids",
                  "customer_substitution_feedback:rejected_counts", "customer_substitution_feedback:last_accepted"],
        entity_rows=[{"customer_id": REJECTER}]).to_dict()
    assert (mine["original_ids"], mine["substitute_ids"], mine["rejected_counts"], mine["last_accepted"]) == (
        [[product]], [[victim]], [[1]], [[0]])
    pair = fs.get_online_features(
        features=["product_substitution_feedback:substitute_ids", "product_substitution_feedback:acceptance_rates"],
        entity_rows=[{"product_id": product}]).to_dict()
    assert pair["substitute_ids"] == [[victim]] and pair["acceptance_rates"][0] == pytest.approx([1 / 3])
