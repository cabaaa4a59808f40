"""The sustained bench's mixes: the chain mix sends the data set's lines in order, baskets together, a new basket
id each pass; both mixes keep the heavy customers' and the hot pair's shares; every event is a valid pantry event."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime

import numpy as np
import pytest

from load_tests.bench.sustained_mix import (
    HOUSEHOLD_OFFSET,
    PASS_BASKET_OFFSET,
    ChainMix,
    mix,
    uniform_event,
)
from pantry import events

TS = datetime(2017, 4, 1, tzinfo=UTC)


def lines(n_baskets: int = 50, per_basket: int = 4) -> dict[str, np.ndarray]:
    """Baskets of `per_basket` lines, shuffled, with times that put basket b before basket b + 1."""
    rng = np.random.default_rng(3)
    basket = np.repeat(np.arange(n_baskets) + 1_000, per_basket)
    order = rng.permutation(len(basket))
    basket = basket[order]
    return {"ts": (basket - 1_000) * 60_000_000, "customer_id": basket % 7 + 1, "store_id": basket % 3 + 300,
            "basket_id": basket, "product_id": np.arange(len(basket))[order] + 10, "quantity": np.ones_like(basket),
            "sales_value": np.full(len(basket), 2.5)}


def test_the_chain_mix_sends_the_lines_in_time_order_with_each_basket_together_and_new_baskets_each_pass():
    data = lines()
    event = ChainMix(data, seed=1).event
    ordinary = [e for e in (event(seq, TS) for seq in range(3_000))
                if isinstance(e, events.Purchase) and e.customer_id >= HOUSEHOLD_OFFSET]
    n = len(data["basket_id"])
    assert len(ordinary) > 2 * n  # more than two passes over the lines
    first = [e.basket_id for e in ordinary[:n]]
    assert first == sorted(first) and Counter(first) == Counter(data["basket_id"].tolist())
    second = [e.basket_id for e in ordinary[n:2 * n]]
    assert second == [b + PASS_BASKET_OFFSET for b in first]  # the same trips, as new baskets
    by_basket = {b: (c, s) for b, c, s in zip(data["basket_id"], data["customer_id"], data["store_id"], strict=True)}
    for e in ordinary[:n]:
        assert (e.customer_id - HOUSEHOLD_OFFSET, e.store_id) == by_basket[e.basket_id]
        assert e.sales_value == 2.5 and e.ts == TS


def test_both_mixes_keep_the_heavy_customers_and_hot_pair_shares_and_send_valid_events():
    chain = ChainMix(lines(), seed=5).event
    rng, heavy = random.Random(5), [0]
    for event in (chain, lambda seq, ts: uniform_event(rng, seq, ts, heavy)):
        sent = [event(seq, TS) for seq in range(20_000)]
        heavy_share = sum(e.customer_id <= 10 for e in sent) / len(sent)
        hot_share = sum(isinstance(e, events.Purchase) and (e.store_id, e.product_id) == (1, 1) and e.customer_id > 10
                        for e in sent) / len(sent)
        assert 0.09 < heavy_share < 0.11 and 0.04 < hot_share < 0.06
        assert len({e.event_id for e in sent}) == len(sent)
        for e in sent[:2_000]:  # what the flow decodes: the bounds of pantry.events hold
            assert events.decode_msgpack(events.encode_msgpack(e)) == e


def test_the_same_seed_sends_the_same_events():
    a, b = ChainMix(lines(), seed=9).event, ChainMix(lines(), seed=9).event
    assert [a(s, TS) for s in range(500)] == [b(s, TS) for s in range(500)]


def test_an_unknown_mix_is_refused_by_name():
    with pytest.raises(ValueError, match="chain, uniform, not 'zipf'"):
        mix(None, "zipf", seed=1)
