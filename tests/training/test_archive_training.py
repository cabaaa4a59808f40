"""Training learns from the event archive (live traffic) beside the data set: archived purchases before --until reach
the recommender (a product only live purchases gave a customer is in their buy-again after a retrain, and not
before), the data digest changes so the retrain is not skipped as up to date, and substitution feedback comes out as
labels."""

from __future__ import annotations

import os
import time
from datetime import timedelta

import msgspec
import numpy as np
import pyarrow.compute as pc
import pytest
from training_consts import SLICE_UNTIL, TINY_ALS

from pantry import dataset
from pantry import events as E
from pantry.models import load_version, registry
from streaming.event_archive import EventArchive
from streaming.features.event import from_event
from training.data import data_digest, load_purchases, substitution_feedback
from training.pipeline import train


@pytest.fixture()
def own(feast_applied, tmp_path):
    """The session's data set (read only) with an archive and a registry of this test's own."""
    data = tmp_path / "data"
    data.mkdir()
    os.symlink(feast_applied.dataset_dir, data / "data")
    return msgspec.structs.replace(feast_applied, data_dir=data, artifacts_dir=tmp_path / "artifacts")


def customer_and_new_product(settings) -> tuple[int, int, int]:
    """The busiest customer before the cut, a product others bought (it is in the model's index) and they never did,
    and their store."""
    ev = dataset.read_events(settings, until=SLICE_UNTIL, columns=["type", "customer_id", "product_id", "store_id"])
    ev = ev.filter(pc.equal(ev.column("type"), "purchase")).to_pandas()
    customer = int(ev["customer_id"].value_counts().index[0])
    theirs = set(ev.loc[ev["customer_id"] == customer, "product_id"])
    popular = ev["product_id"].value_counts().index
    product = next(int(p) for p in popular if p not in theirs)
    store = int(ev.loc[ev["customer_id"] == customer, "store_id"].mode()[0])
    return customer, product, store


def archive(settings, evs: list[E.Event]) -> None:
    writer = EventArchive(settings, "test")
    writer.append(time.time(), [from_event(e) for e in evs])
    writer.close()


def buy_again(settings, version: str, customer: int) -> list[int]:
    model = load_version(settings.models_dir, "recommender", version)
    got = model.recommend({}, customer_id=customer, k=50, surface="buy_again", exclude=frozenset(), store_id=None)
    return [s.product_id for s in got]


def test_archived_live_purchases_reach_the_recommender_after_a_retrain(own):
    customer, product, store = customer_and_new_product(own)
    quiet = {"only": ("recommender",), "activate": True, "als_params": TINY_ALS, "push": False,
             "echo": lambda _m: None}
    before = train(own, SLICE_UNTIL, **quiet).versions["recommender"]
    assert product not in buy_again(own, before, customer)
    digest = data_digest(own, SLICE_UNTIL)

    # live traffic: the customer buys the product in 6 baskets over the last 3 weeks before the cut, once after it;
    # and a line of the data set posted again with its own id (as the shopper simulator does): not counted twice
    days = [21, 17, 13, 9, 5, 1, -2]
    known = dataset.read_events(own, until=SLICE_UNTIL, columns=["event_id", "type", "ts", "customer_id", "store_id",
                                                                 "basket_id", "product_id"])
    known = known.filter(pc.equal(known.column("type"), "purchase")).slice(0, 1).to_pylist()[0]
    archive(own, [E.Purchase(event_id=f"live-{d}", ts=SLICE_UNTIL - timedelta(days=d), customer_id=customer,
                             store_id=store, basket_id=9_000_000 + d, product_id=product, quantity=1,
                             sales_value=2.0) for d in days]
            + [E.Purchase(**{k: v for k, v in known.items() if k != "type"})])
    purchases = load_purchases(own, SLICE_UNTIL)
    live = purchases[(purchases["customer_id"] == customer) & (purchases["product_id"] == product)]
    assert len(live) == 6  # the one at or after --until is not read
    assert np.all(np.diff(purchases["day"].to_numpy()) >= 0)  # still in event-time order
    assert data_digest(own, SLICE_UNTIL) != digest  # so the next `pantry train` is not skipped as up to date
    assert len(load_purchases(own, SLICE_UNTIL, archive=False)) == len(purchases) - 6

    after = train(own, SLICE_UNTIL, **quiet).versions  # no --force: the data changed
    assert "recommender" in after
    ranked = buy_again(own, after["recommender"], customer)
    assert product in ranked[:10], ranked[:10]
    assert registry.active_version(own.models_dir, "recommender") == after["recommender"]


def test_substitution_feedback_labels_come_from_the_archive_before_until(own):
    t = SLICE_UNTIL - timedelta(days=1)
    fb = [E.SubstitutionFeedback(event_id=f"fb-{i}", ts=t + timedelta(hours=i), customer_id=7, store_id=3,
                                 original_product_id=100 + i, substitute_product_id=200 + i, accepted=i % 2 == 0,
                                 decision_id=f"d-{i}") for i in range(3)]  # fb-2 is past the cut: not a label
    archive(own, [*fb, E.ProductView(event_id="view", ts=t, customer_id=7, product_id=1)])
    assert substitution_feedback(own, SLICE_UNTIL - timedelta(days=2)).empty
    labels = substitution_feedback(own, t + timedelta(hours=2))
    assert labels[["original_product_id", "substitute_product_id", "accepted", "decision_id"]].values.tolist() == [
        [100, 200, True, "d-0"], [101, 201, False, "d-1"]]
    assert labels["customer_id"].tolist() == [7, 7] and labels["day"].iloc[1] > labels["day"].iloc[0]


def test_accepted_substitutions_become_ranker_groups_labelled_with_the_substitute(own):
    from pantry.models.substitution_features import pool
    from training.substitutions import SWITCH_DAYS, fit_at, window_set

    purchases = load_purchases(own, SLICE_UNTIL)
    start = SLICE_UNTIL - timedelta(days=SWITCH_DAYS)
    _before, index, _uf, cat = fit_at(own, purchases, start, TINY_ALS)
    original = next(i for i in np.argsort(-cat.buyers) if len(pool(cat, int(i))) >= 3)
    substitute = int(pool(cat, int(original))[2])  # the pool's third: a label, not what the order says already
    customer = int(purchases["customer_id"].iloc[0])
    archive(own, [E.SubstitutionFeedback(event_id=f"sub-{k}", ts=start + timedelta(days=1 + k), customer_id=customer,
                                         store_id=1, original_product_id=int(index.products[original]),
                                         substitute_product_id=int(index.products[substitute]), accepted=k < 2)
                  for k in range(3)])  # two accepted, one rejected
    feedback = substitution_feedback(own, SLICE_UNTIL)
    xs, pos = window_set(own, purchases, start, SLICE_UNTIL, TINY_ALS)
    fx, fpos = window_set(own, purchases, start, SLICE_UNTIL, TINY_ALS, feedback)
    assert len(fx) == len(xs) + 2 and fpos[:len(pos)] == pos  # the departures as before, then the accepted ones
    candidates = pool(cat, int(original))
    assert [int(candidates[p]) for p in fpos[-2:]] == [substitute, substitute]
