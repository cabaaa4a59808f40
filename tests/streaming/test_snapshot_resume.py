"""A shard resumed from its snapshot (which leaves out the indexes a state rebuilds, and holds pairs that sold once
as Singles) gives the rows of the shard that never stopped: random purchases, baskets of several lines, lines out of
order within the lateness bound, inventory counts, snapshots taken between any two batches."""

from __future__ import annotations

import random

import pytest

from streaming.customer_shard import CustomerShardLogic
from streaming.features.event import DAY, LATENESS_S, Ev
from streaming.shards import Work
from streaming.store_shard import StoreShardLogic

T0 = 1_500_000_000.0


def _events(seed: int, n: int = 3000) -> list[Ev]:
    rng = random.Random(seed)
    out, t = [], T0
    for i in range(n):
        t += rng.choice([0.0, 1.0, 30.0, 400.0, 3 * 3600.0])
        when = t - rng.uniform(0, LATENESS_S - 1) if rng.random() < 0.2 else t  # out of order, within lateness
        cid, sid = rng.randrange(1, 20), rng.randrange(1, 6)
        pid = rng.choice([rng.randrange(1, 8), 100 + i])  # 100 + i: a pair that sells once
        if rng.random() < 0.1:
            out.append(Ev(f"i{i}", "inventory", when, None, sid, pid, None, 0, 0.0, rng.randrange(0, 9)))
        elif rng.random() < 0.1:
            out.append(Ev(f"v{i}", "product_view", when, cid, None, pid))
        else:
            basket = rng.choice([i, i - 1, i - 2])  # baskets of several lines
            out.append(Ev(f"p{i}", "purchase", when, cid, sid, pid, basket, rng.randrange(1, 4),
                          round(rng.uniform(0.5, 20), 2)))
    return out


def _rows(logic, as_of: float) -> dict:
    out, _ = logic.on_batch([Work([], True, as_of, True)])
    return {(view, join): (values, t) for view, join, values, t in out[0].online}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_shard_resumed_from_its_snapshot_gives_the_rows_of_one_that_never_stopped(seed: int):
    rng = random.Random(seed)
    for make, key in ((lambda resume: CustomerShardLogic(resume, flush_s=0.0), "customer_id"),
                      (lambda resume: StoreShardLogic(resume, flush_s=0.0), "store_id")):
        events = [e for e in _events(seed) if getattr(e, key) is not None]  # as the gate routes them
        whole, resumed = make(None), make(None)
        for i in range(0, len(events), 100):
            batch = events[i:i + 100]
            whole.on_batch([Work(batch, False, None, False)])
            resumed.on_batch([Work(batch, False, None, False)])
            if rng.random() < 0.3:
                resumed = make(resumed.snapshot())
        if isinstance(whole, StoreShardLogic):
            assert len(whole.shard.small) and whole.shard.pairs  # both ways of holding a pair were resumed
        end = max(e.t for e in events)
        assert _rows(resumed, end) == _rows(whole, end)
        assert _rows(resumed, end + 8 * DAY) == _rows(whole, end + 8 * DAY)  # windows rolled after the resume
