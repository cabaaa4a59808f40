"""The pure feature functions against hand-computed answers: window edges, sessions, late and out-of-order events."""

from __future__ import annotations

import math

import msgspec
import pytest

from streaming import gate as G
from streaming.features import customer as C
from streaming.features import store as S
from streaming.features import store_product as SP
from streaming.features.event import DAY, HOUR, LATENESS_S, MINUTE, Ev, next_change
from streaming.features.small_pairs import K, SmallPairs, encode_hook
from streaming.features.top import top_merge, top_scores
from streaming.features.windows import GRAIN_S, fold_before, grain_start

T0 = 1_500_000_000.0  # 2017-07-14T02:40Z


def buy(eid, t, cid=1, sid=10, pid=100, bid=1, q=1, sales=1.0) -> Ev:
    return Ev(eid, "purchase", t, cid, sid, pid, bid, q, sales)


def ev(eid, kind, t, cid=1, pid=100, q=1) -> Ev:
    return Ev(eid, kind, t, cid, None, pid, None, q)


def customer(*events: Ev) -> C.CustomerState:
    st = C.CustomerState()
    for e in events:
        C.customer_apply(st, e)
    return st


# ---- customer_activity ------------------------------------------------------------------------------------------


def test_activity_windows_are_half_open_at_the_old_edge():
    st = customer(
        buy("a", T0 - 28 * DAY, bid=1, sales=5.0),  # exactly 28 days old: outside (as_of - 28d, as_of]
        buy("b", T0 - 28 * DAY + 1, bid=2, sales=7.0),  # one second younger: inside the 28-day window
        buy("c", T0 - 7 * DAY, bid=3, sales=11.0),  # exactly 7 days old: in 28d, not in 7d
        buy("d", T0 - HOUR, bid=4, sales=2.0),
        buy("e", T0 - HOUR, bid=4, pid=101, sales=3.0),  # second line of basket 4: one order, both spends
    )
    row = C.activity_row(st, T0)
    assert row["orders_28d"] == 3
    assert row["spend_28d"] == pytest.approx(7.0 + 11.0 + 5.0)
    assert row["orders_7d"] == 1
    assert row["spend_7d"] == pytest.approx(5.0)
    assert row["last_order_at"] == T0 - HOUR
    # the next change without new events: basket 2 leaves the 28-day window one second after as_of
    assert C.customer_next_change(st) == pytest.approx(T0 + 1)


def test_preferred_store_is_the_one_with_most_baskets_ties_to_smaller_id():
    st = customer(buy("a", T0, sid=7, bid=1), buy("b", T0 + 1, sid=3, bid=2), buy("c", T0 + 2, sid=3, bid=2))
    assert C.activity_row(st, T0 + 2)["preferred_store_id"] == 3  # 1 basket each: the smaller id
    C.customer_apply(st, buy("d", T0 + 3, sid=7, bid=3))
    assert C.activity_row(st, T0 + 3)["preferred_store_id"] == 7


def test_activity_rolls_forward_when_evaluated_later():
    st = customer(buy("a", T0, bid=1, sales=4.0))
    assert C.activity_row(st, T0 + 7 * DAY - 1)["orders_7d"] == 1
    later = C.activity_row(st, T0 + 7 * DAY)
    assert (later["orders_7d"], later["orders_28d"]) == (0, 1)
    assert C.activity_row(st, T0 + 28 * DAY)["orders_28d"] == 0


# ---- customer_session -------------------------------------------------------------------------------------------


def test_session_gap_of_exactly_30_minutes_continues_more_starts_a_new_one():
    st = customer(ev("a", "product_view", T0, pid=1), ev("b", "product_view", T0 + 30 * MINUTE, pid=2))
    assert C.session_row(st)["session_events"] == 2
    C.customer_apply(st, ev("c", "product_view", T0 + 60 * MINUTE + 1, pid=3))
    row = C.session_row(st)
    assert row["session_events"] == 1
    assert row["session_started_at"] == T0 + 60 * MINUTE + 1
    assert row["session_product_ids"] == [3]


def test_session_last_20_products_newest_first_and_cart():
    events = [ev(f"v{i}", "product_view", T0 + i, pid=i) for i in range(25)]
    events += [ev("a1", "add_to_cart", T0 + 30, pid=5), ev("a2", "add_to_cart", T0 + 31, pid=6, q=2),
               ev("r1", "remove_from_cart", T0 + 32, pid=6), ev("a3", "add_to_cart", T0 + 33, pid=7),
               buy("p1", T0 + 34, pid=7, sales=2.5)]
    row = C.session_row(customer(*events))
    assert row["session_product_ids"][:4] == [7, 6, 5, 24]
    assert len(row["session_product_ids"]) == 20
    assert row["session_distinct_products"] == 25
    assert row["cart_product_ids"] == [6, 5]  # 6: added 2, removed 1; 7 was bought
    assert row["session_spend"] == pytest.approx(2.5)
    assert row["session_events"] == 30


def test_session_out_of_order_event_within_the_session_is_merged():
    st = customer(ev("a", "product_view", T0, pid=1), ev("b", "product_view", T0 + 10 * MINUTE, pid=2))
    C.customer_apply(st, ev("c", "add_to_cart", T0 - 5 * MINUTE, pid=3))  # arrives late, but within the gap
    row = C.session_row(st)
    assert row["session_started_at"] == T0 - 5 * MINUTE
    assert row["session_product_ids"] == [2, 1, 3]
    assert row["cart_product_ids"] == [3]
    C.customer_apply(st, ev("d", "product_view", T0 - 2 * HOUR, pid=4))  # belongs to an older, closed session
    assert C.session_row(st)["session_events"] == 3


# ---- customer_repertoire ----------------------------------------------------------------------------------------


def test_repertoire_decays_with_a_90_day_half_life():
    st = customer(buy("a", T0, pid=1), buy("b", T0, pid=1, bid=2), buy("c", T0 + 90 * DAY, pid=2, bid=3))
    row = C.repertoire_row(st, T0 + 90 * DAY)
    # product 1: two purchases 90 days ago -> 2 * 0.5 = 1.0; product 2: one purchase now -> 1.0; tie -> smaller id
    assert row["repertoire_product_ids"] == [1, 2]
    assert row["repertoire_scores"] == pytest.approx([1.0, 1.0])
    later = C.repertoire_row(st, T0 + 180 * DAY)
    assert later["repertoire_scores"] == pytest.approx([0.5, 0.5])


def test_repertoire_keeps_top_50():
    st = customer(*[buy(f"p{i}", T0 + i, pid=i, bid=i) for i in range(60)])
    row = C.repertoire_row(st, T0 + 60)
    assert len(row["repertoire_product_ids"]) == 50
    assert row["repertoire_product_ids"][0] == 59  # the newest purchase has decayed least


def test_repertoire_always_holds_the_last_purchases():
    # 60 staples bought 3 times yesterday (score ~3 each) push one fresh purchase (score 1) out of the top 50,
    # yet it is kept: it is among the customer's last REPERTOIRE_RECENT purchases.
    staples = [buy(f"h{i}-{n}", T0 - DAY - i, pid=i, bid=2000 + n) for i in range(60) for n in range(3)]
    st = customer(*staples, buy("fresh", T0, pid=999, bid=5))
    row = C.repertoire_row(st, T0)
    ids, scores = row["repertoire_product_ids"], row["repertoire_scores"]
    assert 999 in ids and ids[-1] == 999  # sorted by score: it has the smallest
    assert scores == sorted(scores, reverse=True)
    assert len(ids) <= C.REPERTOIRE_TOP + C.REPERTOIRE_RECENT
    assert set(ids[:50]) == set(range(50))  # the decayed top 50 is untouched


def test_recent_purchases_do_not_depend_on_arrival_order():
    events = [buy(f"r{i}", T0 + (i * 7919) % 30, pid=i, bid=i) for i in range(30)]
    forward, backward = customer(*events), customer(*reversed(events))
    assert forward.recent == backward.recent
    assert len(forward.recent) == C.REPERTOIRE_RECENT


# ---- store_traffic and store_product ----------------------------------------------------------------------------


def test_store_traffic_1h_and_24h():
    st = S.StoreState()
    for e in (buy("a", T0 - DAY, cid=1, bid=1, sales=9.0),  # exactly 24h old: out
              buy("b", T0 - 2 * HOUR, cid=1, bid=2, sales=1.0),
              buy("c", T0 - HOUR, cid=2, bid=3, sales=2.0),  # exactly 1h old: in 24h only
              buy("d", T0 - MINUTE, cid=2, bid=4, sales=3.0),
              buy("e", T0, cid=3, bid=5, sales=4.0),
              buy("f", T0, cid=3, bid=5, pid=7, sales=0.5)):
        S.store_apply(st, e)
    row = S.traffic_row(st, T0)
    assert row == {"baskets_1h": 2, "customers_1h": 2, "baskets_24h": 4, "customers_24h": 3,
                   "sales_24h": pytest.approx(1.0 + 2.0 + 3.0 + 4.0 + 0.5)}


def test_store_product_units_on_hand_and_in_stock():
    sp = SP.StoreProductState()
    for e in (buy("a", T0 - 28 * DAY, q=5), buy("b", T0 - 10 * DAY, q=2), buy("c", T0 - DAY, q=3)):
        SP.store_product_apply(sp, e)
    row = SP.store_product_row(sp, T0)
    assert (row["units_7d"], row["units_28d"], row["last_sold_at"], row["on_hand"]) == (3, 5, T0 - DAY, None)
    # 2 sale events in 28 days, last one a day ago: P(in stock) from the Poisson/Bayes rule
    quiet = math.exp(-(2 / 28) * 1.0)
    assert row["in_stock_prob"] == pytest.approx(0.9 * quiet / (0.9 * quiet + 0.1))
    SP.store_product_apply(sp, Ev("i1", "inventory", T0 - HOUR, None, 10, 100, on_hand=4))
    SP.store_product_apply(sp, buy("d", T0, q=1))  # sold after the count: 4 - 1
    row = SP.store_product_row(sp, T0)
    assert (row["on_hand"], row["in_stock_prob"]) == (3, 1.0)
    SP.store_product_apply(sp, Ev("i0", "inventory", T0 - 2 * HOUR, None, 10, 100, on_hand=0))  # older count
    assert SP.store_product_row(sp, T0)["on_hand"] == 3
    SP.store_product_apply(sp, Ev("i2", "inventory", T0 + 1, None, 10, 100, on_hand=0))
    row = SP.store_product_row(sp, T0 + 1)
    assert (row["on_hand"], row["in_stock_prob"]) == (0, 0.0)


def test_in_stock_probability_falls_for_a_fast_seller_gone_quiet():
    assert SP.in_stock_probability(10.0, 0.01) > 0.85
    assert SP.in_stock_probability(10.0, 2.0) < 0.01
    assert SP.in_stock_probability(0.05, 2.0) > 0.85  # a slow seller's silence says little
    assert SP.in_stock_probability(1.0, None) == SP.IN_STOCK_PRIOR


# ---- the gate ----------------------------------------------------------------------------------------------------


def test_gate_counts_duplicates_and_rejects_late_events_but_keeps_out_of_order_ones():
    st = G.GateState()
    accepted, late = G.gate_apply(st, [buy("a", T0), buy("b", T0 + 20 * MINUTE), buy("a", T0)])
    assert [e.event_id for e in accepted] == ["a", "b"]
    assert st.counters["duplicate"] == 1
    # out of order by 9 minutes: within the 10-minute lateness bound
    accepted, late = G.gate_apply(st, [buy("c", T0 + 11 * MINUTE), buy("d", T0 + 9 * MINUTE)])
    assert [e.event_id for e in accepted] == ["c"]
    assert [e.event_id for _, e in late] == ["d"]
    assert late[0][0].startswith("late")
    assert st.counters == {"processed": 3, "duplicate": 1, "late": 1, "invalid": 0}
    assert st.watermark == T0 + 10 * MINUTE


def test_top_merge_gives_the_same_top_as_ranking_again():
    import random

    rng = random.Random(5)
    for n in (1, 3, 50):
        scores: dict[int, float] = {}
        top = top_scores(scores, n)
        for _ in range(300):
            changed = set()
            for _ in range(rng.choice([1, 1, 2, 5, 40])):  # one purchase (live) or many per flush (replay)
                product = rng.randrange(120)
                scores[product] = scores.get(product, 0.0) + rng.choice([1.0, 0.5, 2.0, rng.random()])  # ties too
                changed.add(product)
            top_merge(top, changed, scores, n)
            assert top == top_scores(scores, n)
            assert top.items() == sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:n]  # the rule itself


def test_recent_purchases_keep_the_newest_by_time_then_product():
    import random

    rng = random.Random(11)
    for _ in range(200):
        recent: dict[int, float] = {}
        bought: dict[int, float] = {}
        for _ in range(rng.randrange(1, 60)):
            product, t = rng.randrange(30), float(rng.randrange(8))  # many equal times: ties on product id
            C._remember_recent(recent, product, t)
            bought[product] = max(t, bought.get(product, t))
        # what is held is never older than what was left out, in (time, product) order
        assert len(recent) == min(len(bought), C.REPERTOIRE_RECENT)
        held = sorted(((t, p) for p, t in recent.items()))
        assert [(t, p) for p, t in recent.items()] == held  # kept in order: the oldest is the first key
        left_out = [(bought[p], p) for p in bought if p not in recent]
        assert not left_out or max(left_out) < held[0]


def test_a_snapshot_with_recent_purchases_in_any_order_is_sorted_at_its_next_purchase():
    st = C.CustomerState()
    for i in range(C.REPERTOIRE_RECENT):
        C.customer_apply(st, buy(f"e{i}", T0 + i, pid=100 + i, bid=i))
    assert st.recent_sorted
    shuffled = dict(reversed(list(st.recent.items())))  # an older snapshot: any order, no flag
    old = msgspec.structs.replace(st, recent=shuffled, recent_sorted=False)
    C.customer_apply(old, buy("new", T0 + 100, pid=999, bid=99))
    C.customer_apply(st, buy("new", T0 + 100, pid=999, bid=99))
    assert list(old.recent.items()) == list(st.recent.items())
    assert 100 not in old.recent and 999 in old.recent  # the oldest went, whatever order it was held in


def test_in_stock_shortcuts_equal_the_formula():
    sp = SP.StoreProductState()
    assert SP.store_product_row(sp, T0)["in_stock_prob"] == SP.in_stock_probability(0.0, None)
    SP.store_product_apply(sp, buy("a", T0 - 40 * DAY, q=1))
    assert SP.store_product_row(sp, T0)["in_stock_prob"] == SP.in_stock_probability(0.0, 40.0)


def test_store_product_next_change_is_next_change_of_its_sales_minutes():
    import random

    rng = random.Random(2)
    for _ in range(500):
        sp = SP.StoreProductState(as_of=T0)
        times = [T0 + rng.choice([-40, -28, -27.5, -7, -6, 0, 1]) * DAY + rng.choice([0.0, -1.0, 1.0])
                 for _ in range(rng.randrange(0, 6))]
        sp.ts, sp.qs = SP.Times(times), SP.Counts([1] * len(times))
        want = next_change((grain_start(t) for t in times if t <= sp.as_of), sp.as_of, (7 * DAY, 28 * DAY))
        assert SP.store_product_next_change(sp) == want


def test_store_events_apply_equals_the_per_event_functions():
    import random

    import msgspec

    rng = random.Random(5)
    events = []
    for i in range(3000):
        t = T0 + rng.uniform(-3 * DAY, 3 * DAY)
        kind = rng.choice(["purchase"] * 6 + ["inventory", "product_view", "add_to_cart"])
        sid, pid = rng.choice([1, 2, 17]), rng.choice([None, 5, 6, 7, 2**31 + 3, 1000 + i])  # 1000 + i: sells once
        events.append(Ev(f"e{i}", kind, t, rng.choice([None, 1, 2]), sid, pid, rng.choice([None, 1, 2, 3]),
                         rng.randrange(1, 4), rng.random(), rng.choice([None, 0, 5]) if kind == "inventory" else None))
    stores, pairs, small, dirty_stores, dirty_pairs = {}, {}, SmallPairs(), set(), set()
    for i in range(0, len(events), 700):  # in batches, as a shard gets them
        assert S.store_events_apply(stores, pairs, small, dirty_stores, dirty_pairs, events[i:i + 700]) == []
    want_stores, want_pairs, want_dirty_stores, want_dirty_pairs = {}, {}, set(), set()
    for e in events:
        if e.kind == "purchase":
            st = want_stores.setdefault(e.store_id, S.StoreState())
            if S.store_apply(st, e):
                want_dirty_stores.add(e.store_id)
        elif e.kind != "inventory":
            continue
        if e.product_id is not None:
            key = SP.pair_key(e.store_id, e.product_id)
            if SP.store_product_apply(want_pairs.setdefault(key, SP.StoreProductState()), e):
                want_dirty_pairs.add(key)
    encode = msgspec.msgpack.Encoder(enc_hook=encode_hook).encode
    assert encode(stores) == encode(want_stores)
    assert len(small) and not set(small) & pairs.keys()  # the small pairs, held apart
    assert {**pairs, **{k: small.state(k) for k in small}} == want_pairs
    assert (dirty_stores, dirty_pairs) == (want_dirty_stores, want_dirty_pairs)
    assert len(pairs) > 10 and any(sp.inv_on_hand is not None for sp in pairs.values())


def test_a_small_pair_gives_the_rows_and_next_change_of_its_state():
    """A pair in the small pairs' columns against the StoreProductState it stands for, sale by sale up to the
    last it has room for (in and out of order, some before the windows): every row time from its sales to past 28
    days (window edges to the minute and the second), after rolls, and as the state it leaves them as."""
    import random

    rng = random.Random(7)
    edges = [0.0, 1.0, 59.0, 60.0, 61.0, 7 * DAY - 60, 7 * DAY, 7 * DAY + 60, 28 * DAY - 60, 28 * DAY,
             28 * DAY + 60, 28 * DAY + LATENESS_S + 120, 40 * DAY]
    for case in range(400):
        small, state, key = SmallPairs(), SP.StoreProductState(), 1000 + case
        t0 = T0 + rng.choice([0.0, 30.0, 59.999, rng.uniform(0, 3600)])
        for i in range(K):
            t = t0 + rng.choice([0.0, 1.0, -30.0, rng.uniform(-LATENESS_S, 2 * DAY), 30 * DAY * (i % 3 == 2)])
            q = rng.randrange(1, 5)
            assert small.sale(key, t, q)
            SP.store_product_apply(state, Ev(f"p{i}", "purchase", t, 1, 1, 7, i, q, 1.0))
            assert small.state(key) == state
            for as_of in [state.as_of + d + rng.choice([0.0, 0.5]) for d in rng.sample(edges, 3)]:
                small.roll(key, as_of)
                state.as_of = as_of
                assert small.values(key, as_of) == SP.store_product_values(state, as_of), (case, i, as_of)
                assert small.next_change(key) == SP.store_product_next_change(state)
                assert small.state(key) == state  # the same sales forgotten
        if len(state.ts) == K:  # full (none forgotten): it must become its state first
            assert not small.sale(key, t0, 1)
        assert small.pop_state(key) == state and key not in small and len(small.free) == 1


def _traffic_by_scan(lines: list[tuple[float, int | None, int | None, float]], as_of: float) -> dict:
    """store_traffic by its definition, from every line so far: a basket's time is its first line's, a customer
    counts in a window if one of its baskets does."""
    first: dict[int, tuple[float, int | None]] = {}
    for t, bid, cid, _ in lines:
        if bid is not None and (bid not in first or t < first[bid][0]):
            first[bid] = (t, first[bid][1] if bid in first else cid)
    out = {}
    for name, lo in (("1h", as_of - HOUR), ("24h", as_of - DAY)):
        inside = [(t, cid) for t, cid in first.values() if lo < t <= as_of]
        out[f"baskets_{name}"] = len(inside)
        out[f"customers_{name}"] = len({cid for _, cid in inside if cid is not None})
    # sales count time to the minute (streaming/features/windows.py)
    out["sales_24h"] = round(sum(v for t, _, _, v in lines if as_of - DAY < grain_start(t) and t <= as_of), 6)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_store_traffic_indexes_equal_a_scan_of_every_line(seed):
    """Random lines over three days, out of order within the lateness bound, baskets with several lines (an
    earlier line moving a basket's time back), lines without basket or customer; the row after each line, and
    after quiet gaps (windows emptying, old baskets forgotten), equals the definition's scan."""
    import random

    rng = random.Random(seed)
    st = S.StoreState()
    lines: list[tuple[float, int | None, int | None, float]] = []
    newest = T0
    for i in range(600):
        newest += rng.choice([1.0, 30.0, 300.0, 1800.0, 6 * HOUR if rng.random() < 0.03 else 60.0])
        t = newest - rng.uniform(0, LATENESS_S) if rng.random() < 0.2 else newest
        bid = None if rng.random() < 0.05 else rng.randrange(max(0, i // 3 - 5), i // 3 + 1)
        cid = None if rng.random() < 0.1 else rng.randrange(1, 40)
        value = round(rng.uniform(0.1, 20.0), 2)
        S.store_apply(st, buy(f"e{i}", t, cid=cid, bid=bid, sales=value))
        lines.append((t, bid, cid, value))
        got = S.traffic_row(st, st.as_of)
        want = _traffic_by_scan(lines, st.as_of)
        assert got == pytest.approx(want), (i, got, want)
        # the running total stays exact; lines older than the lateness bound are held per minute
        assert st.sales_micros == sum(round(v * 1e6) for _, v in st.sales) + sum(m for _, m in st.sales_folded)
        assert all(t >= fold_before(st.as_of) for t, _ in st.sales)
        minutes = [m for m, _ in st.sales_folded]
        assert minutes == sorted(set(minutes)) and all(m > st.as_of - DAY - LATENESS_S - GRAIN_S for m in minutes)
    # a refresh long after: every window empties and the state forgets the old baskets
    assert S.traffic_row(st, st.as_of + 2 * DAY) == {"baskets_1h": 0, "customers_1h": 0, "baskets_24h": 0,
                                                     "customers_24h": 0, "sales_24h": 0}
    assert len(st.bk) == len(st.bk.by_id) == 0 and st.latest == {} and st.customers_by_time == []


def test_store_traffic_of_a_state_without_indexes_rebuilds_them():
    """A store state from before the indexes and the baskets' columns (an older snapshot: a dict of baskets only)
    gives the same row, its baskets moved into the columns."""
    st = S.StoreState()
    for e in (buy("a", T0 - 2 * HOUR, cid=1, bid=2, sales=1.0), buy("b", T0, cid=3, bid=5, sales=4.0),
              buy("c", T0 - HOUR, cid=None, bid=4, sales=2.0)):
        S.store_apply(st, e)
    # an older snapshot: baskets only, and the sales as lines (now each joins its minute at once)
    old = S.StoreState(as_of=st.as_of, baskets={2: [T0 - 2 * HOUR, 1], 5: [T0, 3], 4: [T0 - HOUR, None]},
                       sales=[(T0 - 2 * HOUR, 1.0), (T0 - HOUR, 2.0), (T0, 4.0)])
    assert S.traffic_row(old, T0) == S.traffic_row(st, T0)
    assert old.bk == st.bk and old.latest == st.latest and old.baskets == {}
