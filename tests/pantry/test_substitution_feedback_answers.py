"""The answer's side of substitution feedback (pantry/models/substitution_feedback.py) on rows as the reader returns
them: the rejected pairs (at any age), the pair and kind terms against hand-computed values, nothing without
feedback."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np

from pantry.featurestore.reader import Row
from pantry.models.substitution_feedback import NO_FEEDBACK, Feedback, kinds, reads

# a catalogue of five products: 10 is the original; 11 same maker, same size, similar price; 12 another maker,
# another size, cheaper; 13 another maker, same size, dearer; 14 unknown size
CAT = SimpleNamespace(products=np.array([10, 11, 12, 13, 14], dtype=np.int64),
                      manufacturer=np.array([1, 1, 2, 3, 1], dtype=np.int64),
                      size_code=np.array([5, 5, 6, 5, -1], dtype=np.int64),
                      log_price=np.array([1.0, 1.05, 0.5, 1.5, 1.0], dtype=np.float32))


def row(values: dict | None, stale: bool = False) -> Row:
    status = "missing" if values is None else ("stale" if stale else "present")
    return Row(None if stale else values, None, None, status, values)


def customer(pairs: list[tuple[int, int, int, int, int]], stale: bool = False) -> Row:
    names = ("original_ids", "substitute_ids", "accepted_counts", "rejected_counts", "last_accepted")
    return row({n: [p[i] for p in pairs] for i, n in enumerate(names)}, stale)


def test_reads_are_the_customer_then_one_row_per_item():
    assert [(r.view, r.join_values) for r in reads(7, [10, 20])] == [
        ("customer_substitution_feedback", (7,)), ("product_substitution_feedback", (10,)),
        ("product_substitution_feedback", (20,))]


def test_rejected_pairs_are_left_out_for_their_item_only_even_when_the_row_is_stale():
    fb = Feedback.from_rows([customer([(10, 11, 0, 1, 0), (10, 12, 2, 1, 1)], stale=True), row(None)])
    assert fb.rejected == {10: {11}}
    assert fb.without_rejected([10, 20], [[11, 12, 13], [11, 12]]) == [[12, 13], [11, 12]]
    assert len(fb.originals) == 0  # a stale row does not rank


def test_kinds_of_pairs():
    k = kinds(CAT, np.array([0, 0, 0, 0, -1]), np.array([1, 2, 3, 4, 1]))
    assert k.tolist() == [[0, 1, 1, 0, -1], [0, 1, 0, -1, -1], [1, 0, 2, 1, -1]]


def test_score_terms_add_the_pair_rate_and_the_customers_acceptance_of_the_kind():
    # the customer rejected 12 for 10 twice (another maker, another size, cheaper), accepted 11 once
    fb = Feedback.from_rows([customer([(10, 12, 0, 2, 0), (10, 11, 1, 0, 1)]),
                             row({"substitute_ids": [13], "acceptance_rates": [0.8]})])
    terms = fb.score_terms(CAT, np.array([0, 0]), np.array([0, 0]), np.array([2, 3]), np.array([12, 13]))
    other_maker = math.log((0 + 1) / (2 + 2) / 0.5)  # maker: 12 is the only other-maker pair: 0 of 2 accepted
    other_size = math.log((0 + 1) / (2 + 2) / 0.5)
    cheaper = math.log((0 + 1) / (2 + 2) / 0.5)
    same_size = math.log((1 + 1) / (1 + 2) / 0.5)
    dearer = 0.0  # no verdict on a dearer substitute: the prior
    assert np.allclose(terms, [other_maker + other_size + cheaper, math.log(0.8 / 0.5) + other_maker + same_size +
                               dearer])


def test_no_feedback_changes_nothing():
    assert NO_FEEDBACK.empty and Feedback.from_rows([]).empty
    fb = Feedback.from_rows([row(None), row(None)])
    assert fb.empty and fb.without_rejected([10], [[11]]) == [[11]]
    assert not fb.score_terms(CAT, np.array([0]), np.array([0]), np.array([1]), np.array([11])).any()
