"""Substitution feedback in the flow (streaming/features/substitution.py, the gate's routing, the shards): counts,
the newest verdict with late and out-of-order events, duplicates, the bounds, snapshots, and the same rows whether
the events come one per batch (live) or all at once (an unpaced replay)."""

from __future__ import annotations

import random

import msgspec
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as hs

from pantry.substitution_feedback import CUSTOMER_PAIRS, SUBSTITUTES_PER_PRODUCT, acceptance_rate
from streaming import gate as G
from streaming.customer_shard import CustomerShard, CustomerShardLogic
from streaming.features import customer as C
from streaming.features import substitution as F
from streaming.features.event import LATENESS_S, Ev
from streaming.shards import Work
from streaming.store_shard import StoreShardLogic

T0 = 1_500_000_000.0
CUSTOMER, STORE = 7, 3


def verdict(eid: str, t: float, orig: int, sub: int, ok: bool, cid: int | None = CUSTOMER,
            sid: int | None = STORE) -> Ev:
    return Ev(eid, "substitution_feedback", t, cid, sid, sub, accepted=ok, original_product_id=orig)


def customer_row(*events: Ev) -> dict:
    st = C.CustomerState()
    for e in events:
        assert C.customer_apply(st, e) == C.FEEDBACK
    [(view, values, _)] = C.customer_rows(st, C.FEEDBACK)
    assert view == "customer_substitution_feedback"
    return values


def test_counts_and_the_newest_verdict_per_pair_newest_pair_first():
    row = customer_row(verdict("a", T0, 100, 200, False), verdict("b", T0 + 60, 100, 200, True),
                       verdict("c", T0 + 30, 100, 201, False))
    assert row == {"original_ids": [100, 100], "substitute_ids": [200, 201], "accepted_counts": [1, 0],
                   "rejected_counts": [1, 1], "last_accepted": [1, 0]}


def test_an_out_of_order_older_verdict_counts_but_does_not_replace_the_newer_one():
    row = customer_row(verdict("b", T0 + 60, 100, 200, False), verdict("a", T0, 100, 200, True))
    assert (row["accepted_counts"], row["rejected_counts"], row["last_accepted"]) == ([1], [1], [0])
    # at the same instant a rejection wins, in either order
    for order in ((True, False), (False, True)):
        row = customer_row(*(verdict(f"e{i}", T0, 100, 200, ok) for i, ok in enumerate(order)))
        assert row["last_accepted"] == [0]


def test_a_feedback_event_leaves_the_shopping_views_alone():
    st = C.CustomerState()
    C.customer_apply(st, Ev("p", "purchase", T0, CUSTOMER, STORE, 100, 1, 1, 2.0))
    assert C.customer_apply(st, verdict("v", T0 + 3600, 100, 200, False)) == C.FEEDBACK
    assert st.as_of == T0  # activity and repertoire are not re-evaluated for it
    [(_, _, t)] = C.customer_rows(st, C.FEEDBACK)
    assert t == T0 + 3600  # the feedback row's time is its newest verdict


def test_customer_pairs_are_bounded_and_keep_the_newest():
    st = C.CustomerState()
    for i in range(CUSTOMER_PAIRS + 10):
        C.customer_apply(st, verdict(f"v{i}", T0 + i, 100, 1000 + i, False))
    row = customer_row(*[verdict(f"v{i}", T0 + i, 100, 1000 + i, False) for i in range(CUSTOMER_PAIRS + 10)])
    assert len(st.feedback) == CUSTOMER_PAIRS
    assert row["substitute_ids"] == [1000 + i for i in range(CUSTOMER_PAIRS + 9, 9, -1)]
    # a verdict older than everything held is not taken in
    C.customer_apply(st, verdict("old", T0 - 1, 100, 5, False))
    assert 5 not in [p[1] for p in st.feedback] and len(st.feedback) == CUSTOMER_PAIRS


def test_product_substitutes_are_bounded_with_the_prior_in_the_rate():
    subs: dict[int, list] = {}
    for i, ok in enumerate([True, True, False]):
        F.product_feedback_apply(subs, verdict(f"a{i}", T0 + i, 100, 200, ok, cid=i))
    F.product_feedback_apply(subs, verdict("b", T0 + 10, 100, 201, False))
    values, t = F.product_feedback_row(subs)
    assert values == {"substitute_ids": [201, 200], "accepted_counts": [0, 2], "rejected_counts": [1, 1],
                      "acceptance_rates": [1 / 3, 3 / 5]}  # Beta(1, 1): (accepted + 1) / (verdicts + 2)
    assert t == T0 + 10 and acceptance_rate(0, 0) == 0.5
    for i in range(SUBSTITUTES_PER_PRODUCT + 5):
        F.product_feedback_apply(subs, verdict(f"c{i}", T0 + 100 + i, 100, 5000 + i, True))
    assert len(subs) == SUBSTITUTES_PER_PRODUCT and 200 not in subs and 201 not in subs


_verdicts = hs.lists(hs.tuples(hs.integers(0, 600), hs.integers(1, 4), hs.integers(1, 6), hs.booleans()),
                     min_size=1, max_size=40)


@hsettings(max_examples=300, deadline=None)
@given(_verdicts, hs.randoms(use_true_random=False))
def test_within_the_bounds_the_row_does_not_depend_on_arrival_order(items, rng):
    """Any arrival order of the same verdicts (at most 24 pairs: no eviction) gives the same row, with each pair's
    counts and its newest verdict (a rejection at a tie)."""
    evs = [verdict(f"e{i}", T0 + dt, orig, sub, ok) for i, (dt, orig, sub, ok) in enumerate(items)]
    first = customer_row(*evs)
    shuffled = list(evs)
    rng.shuffle(shuffled)
    assert customer_row(*shuffled) == first
    for orig, sub, acc, rej, last in zip(*first.values(), strict=True):
        mine = [(e.t, e.accepted) for e in evs if (e.original_product_id, e.product_id) == (orig, sub)]
        assert (acc, rej) == (sum(ok for _, ok in mine), sum(not ok for _, ok in mine))
        newest = max(t for t, _ in mine)
        assert last == int(all(ok for t, ok in mine if t == newest))


@hsettings(max_examples=100, deadline=None)
@given(hs.lists(hs.tuples(hs.integers(0, 10_000), hs.integers(1, 200), hs.booleans()), max_size=400))
def test_the_states_never_exceed_their_bounds(items):
    st, subs = C.CustomerState(), {}
    for i, (dt, sub, ok) in enumerate(items):
        e = verdict(f"e{i}", T0 + dt, 100 + sub % 3, sub, ok)
        C.customer_apply(st, e)
        F.product_feedback_apply(subs, e)
        assert len(st.feedback) <= CUSTOMER_PAIRS and len(subs) <= SUBSTITUTES_PER_PRODUCT


def test_the_gate_drops_duplicates_and_late_feedback_and_routes_it_to_customer_and_original():
    logic = G.GateLogic(None)
    first = verdict("v1", T0, 100, 200, False)
    [gated], _ = logic.on_batch([G.Parsed([first, first, verdict("late", T0 - LATENESS_S - 1, 100, 200, True)],
                                          [], False, None)])
    assert logic.st.counters["duplicate"] == 1 and logic.st.counters["late"] == 1
    assert gated.routes == {f"c{CUSTOMER % 16:02d}": [first], f"s{100 % 16:02d}": [first]}  # not the store's shard
    incomplete = Ev("v2", "substitution_feedback", T0, CUSTOMER, STORE, None, accepted=True, original_product_id=1)
    [gated], _ = logic.on_batch([G.Parsed([incomplete], [], False, None)])
    assert gated.routes == {}  # no substitute: nothing to fold (the outcome join still gets it live)


def _flow_rows(batches: list[list[Ev]], defer: bool) -> dict:
    """The online rows the gate and the shards end with: every batch through the gate and its shards, then the end
    of a replay (final); the last row of each (view, entity) wins, as in Redis."""
    gate = G.GateLogic(None)
    shards: dict[str, CustomerShardLogic | StoreShardLogic] = {}
    online: dict = {}

    def send(key: str, work: Work) -> None:
        if key not in shards:
            cls = CustomerShardLogic if key[0] == "c" else StoreShardLogic
            shards[key] = cls(None, flush_s=0.0, defer_online=defer)
        for flush in shards[key].on_batch([work])[0]:
            online.update({(view, join): (values, t) for view, join, values, t in flush.online})

    for events in [*batches, []]:
        final = not events
        [gated], _ = gate.on_batch([G.Parsed(events, [], final, None, final)])
        for key, work in G.route(gated):
            send(key, work)
    return online


def test_one_event_per_batch_live_equals_one_deferred_replay():
    rng = random.Random(3)
    evs = [verdict(f"v{i}", T0 + i * 7 + rng.random(), rng.randrange(100, 104), rng.randrange(200, 220),
                   rng.random() < 0.6, cid=rng.randrange(5)) for i in range(300)]
    evs += [Ev(f"p{i}", "purchase", T0 + i * 11, i % 5, STORE, 300 + i % 7, i, 1, 1.5) for i in range(60)]
    evs.sort(key=lambda e: e.t)
    live = _flow_rows([[e] for e in evs], defer=False)
    replay = _flow_rows([evs[i:i + 97] for i in range(0, len(evs), 97)], defer=True)
    feedback = {k: v for k, v in live.items() if "substitution_feedback" in k[0]}
    assert len(feedback) == 5 + 4  # 5 customers, 4 originals
    assert {k: v for k, v in replay.items() if "substitution_feedback" in k[0]} == feedback
    assert replay == live


def test_snapshots_keep_the_feedback_and_older_snapshots_decode():
    customers = CustomerShardLogic(None, flush_s=0.0)
    stores = StoreShardLogic(None, flush_s=0.0)
    e = verdict("v", T0, 100, 200, False)
    customers.on_batch([Work([e], False, None, False)])
    stores.on_batch([Work([e], False, None, False)])
    again = CustomerShardLogic(customers.snapshot(), flush_s=0.0)
    assert again.shard.states[CUSTOMER].feedback == [[100, 200, 0, 1, T0, 0]]
    assert StoreShardLogic(stores.snapshot(), flush_s=0.0).shard.subs == {100: {200: [0, 1, T0]}}

    class OldState(msgspec.Struct, array_like=True):  # CustomerState before the feedback field
        as_of: float = 0.0

    old = msgspec.msgpack.encode(CustomerShard(states={CUSTOMER: OldState(T0)}))  # type: ignore[dict-item]
    assert CustomerShardLogic(old, flush_s=0.0).shard.states[CUSTOMER].feedback == []


def test_a_customer_known_only_by_feedback_gets_no_shopping_rows_at_a_catch_up():
    deferred = CustomerShardLogic(None, flush_s=0.0, defer_online=True)
    deferred.on_batch([Work([verdict("v", T0, 100, 200, False)], False, None, False)])
    [flush], _ = deferred.on_batch([Work([], True, T0 + 10, True)])
    assert {view for view, _, _, _ in flush.online} == {"customer_substitution_feedback"}
