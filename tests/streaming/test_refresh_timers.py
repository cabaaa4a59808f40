"""A live refresh after the first lists only the entities whose next-change timers have come and those changed since
(streaming.refresh): the rows it emits are those of a refresh that checks every entity every time, and
it checks far fewer. Random purchases (customers and store x product pairs) over weeks of event time, out of order
within the lateness bound, refreshes at random gaps; both logics get the same batches."""

from __future__ import annotations

import random
from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streaming import refresh, shards
from streaming.customer_shard import CustomerShardLogic
from streaming.features.event import DAY, LATENESS_S, MINUTE, Ev
from streaming.shards import Work
from streaming.store_shard import StoreShardLogic

T0 = 1_500_000_000.0
GAPS = [1.0, 5.0, 10 * MINUTE, 40 * MINUTE, 6 * 3600.0, DAY, 3 * DAY, 7 * DAY, 10 * DAY]


class Counting:
    """Counts the entities a logic checks (roll_one calls)."""

    checks = 0

    def roll_one(self, key: int, as_of: float) -> bool:
        self.checks += 1
        return super().roll_one(key, as_of)


class ListsAll(Counting):
    """The reference: every refresh lists every entity."""

    def refresh_candidates(self, as_of: float) -> array:
        return self.candidates()


def logics(kind: str):
    base = CustomerShardLogic if kind == "customer" else StoreShardLogic
    timed = type("Timed", (Counting, base), {})
    full = type("Full", (ListsAll, base), {})
    return timed(None, flush_s=0.0, refresh_slice=10**9), full(None, flush_s=0.0, refresh_slice=10**9)


def rows_of(flushes) -> list:
    return sorted(repr(row) for flush in flushes for row in flush.online)


@pytest.fixture(autouse=True)
def roll_at_every_batch(monkeypatch):
    # every batch rolls and may check every candidate: both logics finish each refresh before the next one
    monkeypatch.setattr(shards, "ROLL_EVERY_S", 0.0)
    monkeypatch.setattr(shards, "CHECKS_PER_ROLL", 10**9)
    monkeypatch.setattr(shards, "ROLL_MAX_EVENTS", 10**9)


@given(st.integers(0, 2**32), st.sampled_from(["customer", "store"]), st.integers(20, 400))
@settings(max_examples=40, deadline=None)
def test_a_timed_refresh_emits_the_rows_of_a_full_one(seed, kind, n_batches):
    rng = random.Random(seed)
    timed, full = logics(kind)
    newest, n = T0, 0
    for _ in range(n_batches):
        newest += rng.choice(GAPS)
        events = []
        for _ in range(rng.randint(0, 4)):
            n += 1
            t = newest - rng.choice([0.0, 0.0, 1.0, LATENESS_S])
            events.append(Ev(f"e{n}", "purchase", t, customer_id=rng.randint(1, 30), store_id=rng.randint(1, 4),
                             product_id=rng.randint(1, 40), basket_id=n, quantity=1, sales_value=1.5))
        refresh = rng.random() < 0.5
        work = Work(events, refresh, newest if refresh else None, False)
        assert rows_of(timed.on_batch([work])[0]) == rows_of(full.on_batch([work])[0])
    # an empty batch rolls what the last refresh listed (both logics roll at every batch)
    quiet = Work([], False, None, False)
    assert rows_of(timed.on_batch([quiet])[0]) == rows_of(full.on_batch([quiet])[0])
    assert not timed.due and not full.due


def test_a_refresh_checks_what_is_due_not_every_entity():
    """100,000 store x product pairs sold over 1,000 minutes: once they are filed, a refresh 5 s of event time later
    checks the entities changed since and those whose windows end in those seconds, not every pair."""
    timed, full = logics("store")
    events = [Ev(f"e{i}", "purchase", T0 + (i % 1000) * 60.0, customer_id=1, store_id=1 + i % 3, product_id=i,
                 basket_id=i, quantity=1, sales_value=1.0) for i in range(100_000)]
    newest = T0 + 999 * 60.0
    for logic in (timed, full):
        logic.on_batch([Work(events, True, newest, False)])  # the first refresh: every pair checked
        logic.on_batch([Work([], True, newest, False)])  # and again: each changed since the first listing
        logic.checks = 0
    for step in range(1, 13):  # a minute of refreshes, 5 s apart, one new sale each
        sale = Ev(f"x{step}", "purchase", newest + 5.0 * step, customer_id=2, store_id=1, product_id=7,
                  basket_id=10**6 + step, quantity=1, sales_value=1.0)
        work = Work([sale], True, newest + 5.0 * step, False)
        assert rows_of(timed.on_batch([work])[0]) == rows_of(full.on_batch([work])[0])
    assert full.checks == 12 * timed.entities()  # 100,001 pairs (the one sold is new) and 3 stores
    assert timed.checks <= 12 * 5  # the pair and the store sold, and the stores whose 1-hour windows moved
    assert timed.timer_entries <= refresh.TIMERS_PER_ENTITY * timed.entities()


def test_a_spread_refresh_reaches_every_shard_at_most_every_fanout_period(monkeypatch):
    """After a live refresh the gate sends (maybe empty) work to every shard so each rolls its due entities forward,
    but at most every FANOUT_EVERY_S: a trickle of batches (one per linger) no longer wakes all 32 shards each time.
    A batch in between goes to the shards that have events only."""
    from streaming import gate as G
    from streaming.gate import GateLogic, Parsed, route
    from streaming.shards import ALL_SHARDS

    clock = [100.0]
    monkeypatch.setattr(G.time, "monotonic", lambda: clock[0])
    logic = GateLogic(None)

    def shards_of(refresh: bool, seconds_later: float) -> set[str]:
        clock[0] += seconds_later
        event = Ev(f"e{clock[0]}", "purchase", T0 + clock[0], 7, 3, 11, 1, 1, 1.0)
        gated, _ = logic.on_batch([Parsed([event], [], refresh, None)])
        return {key for key, _work in route(gated[0])}

    everyone = set(ALL_SHARDS)
    assert shards_of(refresh=True, seconds_later=0.0) == everyone
    assert shards_of(refresh=False, seconds_later=0.05) == {"c07", "s03"}  # within the period: the event's shards
    assert shards_of(refresh=False, seconds_later=0.05) == {"c07", "s03"}
    assert shards_of(refresh=False, seconds_later=0.05) == everyone  # 0.15 s after the last fan-out
    assert shards_of(refresh=False, seconds_later=G.FANOUT_EVERY_S) == everyone
    assert shards_of(refresh=False, seconds_later=G.ROLLING_S) == {"c07", "s03"}  # the spread refresh is over
