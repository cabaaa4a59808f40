"""No event can break the stream. Unit level: the gate's bounds and clock-skew rule, per-event isolation in the
shards (a failing event changes nothing and the rest of its batch is applied), the migration of old pair keys.
Live level (real Redis, real Bytewax, real HTTP): the poison pills of issue 16 by POST /v1/events (400 naming the
field) and by raw XADD (dead letter with a reason, the flow alive), and a hypothesis run of >= 10,000 random and
extreme events through both doors."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from pantry import events
from streaming import gate as G
from streaming.features.event import DAY, HOUR, NO_TIME, Ev, admit
from streaming.features.store import pair_key
from streaming.shards import CustomerShardLogic, StoreShard, StoreShardLogic, Work

T0 = 1_500_000_000.0  # 2017-07-14T02:40Z
WALL = 1_800_000_000.0  # a wall clock well after the data
EVENT_SKEW = G.Skew("event", 300.0, DAY)


def buy(eid, t, cid=1, sid=10, pid=100, bid=1, q=1, sales=1.0) -> Ev:
    return Ev(eid, "purchase", t, cid, sid, pid, bid, q, sales)


# ---- the gate: bounds (every path, a replay's rows too) and the clock-skew rule (live) -----------------------


@pytest.mark.parametrize(
    ("event", "fragment"),
    [
        (buy("a", events.TS_MAX.timestamp()), "ts"),  # 2100
        (buy("a", 1e10), "ts"),  # year 2286: 2.0 ** ... overflowed
        (buy("a", math.nan), "ts"),
        (buy("a", T0, sales=1e308), "sales_value"),
        (buy("a", T0, sales=math.inf), "sales_value"),
        (buy("a", T0, sales=math.nan), "sales_value"),
        (buy("a", T0, cid=2**63), "customer_id"),
        (buy("a", T0, bid=2**64), "basket_id"),
        (buy("a", T0, sid=2**31), "store_id"),
        (buy("a", T0, pid=2**44), "product_id"),
        (buy("a", T0, q=-1), "quantity"),
        (Ev("a", "inventory", T0, None, 1, 1, on_hand=2**40), "on_hand"),
        (Ev("", "product_view", T0, 1, None, 1), "event_id"),
    ],
)
def test_gate_rejects_out_of_bounds_events_without_moving_its_clock(event, fragment):
    st = G.GateState()
    accepted, dead = G.gate_apply(st, [buy("ok", T0), event, buy("ok2", T0 + 1)])
    assert [e.event_id for e in accepted] == ["ok", "ok2"]
    assert len(dead) == 1 and dead[0][0].startswith("invalid") and fragment in dead[0][0], dead
    assert st.max_t == T0 + 1 and st.counters["invalid"] == 1
    assert admit(event) is not None


def test_event_clock_skew_first_event_then_a_day_past_the_watermark():
    st = G.GateState()
    assert st.max_t == NO_TIME
    # no watermark yet: the first event is judged against the wall clock only (a 2017 replay's first event passes)
    accepted, dead = G.gate_apply(st, [buy("first", T0)], EVENT_SKEW, WALL)
    assert len(accepted) == 1 and st.max_t == T0
    accepted, dead = G.gate_apply(st, [buy("far", T0 + DAY + 1), buy("edge", T0 + DAY), buy("next", T0 + DAY + 60)],
                                  EVENT_SKEW, WALL)
    # "far" is rejected and does not move the clock; "edge" (exactly a day ahead) moves it, so "next" passes
    assert [e.event_id for e in accepted] == ["edge", "next"]
    assert [r.split(":")[0] for r, _ in dead] == ["future"] and "skew 86400s" in dead[0][0]
    assert st.max_t == T0 + DAY + 60 and st.counters["future"] == 1
    # never past the wall clock + its skew, whatever the watermark
    st2 = G.GateState(max_t=WALL - HOUR)
    accepted, dead = G.gate_apply(st2, [buy("w1", WALL + 301), buy("w2", WALL + 299)], EVENT_SKEW, WALL)
    assert [e.event_id for e in accepted] == ["w2"] and st2.max_t == WALL + 299
    # a first event from the future of the wall clock is rejected too
    st3 = G.GateState()
    accepted, dead = G.gate_apply(st3, [buy("z", WALL + 3600)], EVENT_SKEW, WALL)
    assert not accepted and st3.max_t == NO_TIME


def test_wall_clock_skew():
    st = G.GateState(max_t=WALL - DAY)
    skew = G.Skew("wall", 300.0, DAY)
    accepted, dead = G.gate_apply(st, [buy("a", WALL + 301), buy("b", WALL + 300), buy("c", WALL - 10)], skew, WALL)
    assert [e.event_id for e in accepted] == ["b", "c"] and st.max_t == WALL + 300
    assert dead[0][0].startswith("future") and "wall clock" in dead[0][0]


def test_replay_has_no_skew_rule_but_the_bounds():
    st = G.GateState()
    accepted, _ = G.gate_apply(st, [buy("a", T0), buy("b", T0 + 30 * DAY)])  # a gap in the data set
    assert len(accepted) == 2


def test_an_exception_in_the_gate_rejects_only_that_event():
    st = G.GateState()
    accepted, dead = G.gate_apply(st, [buy("a", T0), None, buy("b", T0 + 1)])  # type: ignore[list-item]
    assert [e.event_id for e in accepted] == ["a", "b"]
    assert dead[0][0].startswith("error in gate: AttributeError"), dead


# ---- the shards: one failing event changes nothing; the rest of its batch is applied ----------------------------


def _run(logic, evs):
    out, _ = logic.on_batch([Work(list(evs), False, None, False)])
    return out


def test_customer_shard_isolates_a_failing_event():
    good = [buy("g1", T0, cid=1, pid=5), buy("g2", T0 + 60, cid=1, pid=6), buy("g3", T0, cid=2, pid=5)]
    # past the bounds (as if admit were bypassed): 2.0 ** ... overflows in the repertoire decay
    poison = [buy("p1", 1e12, cid=1, pid=7), buy("p2", 1e12, cid=3, pid=7)]  # a known customer, a new one
    logic = CustomerShardLogic(None, flush_s=0.0)
    out = _run(logic, [good[0], poison[0], good[1], poison[1], good[2]])
    reference = CustomerShardLogic(None, flush_s=0.0)
    _run(reference, good)
    assert logic.snapshot() == reference.snapshot()  # not half-updated; no empty state left for customer 3
    dead = [d for flush in out for d in flush.dead]
    assert [r.split(":")[0] for r, _ in dead] == ["error in customer"] * 2 and "OverflowError" in dead[0][0]
    assert msgspec.msgpack.decode(dead[0][1])[0] == "p1"  # the event itself, as the compact event
    assert len(dead[0][0]) <= 500


def test_store_shard_isolates_a_failing_event():
    good = [buy("g1", T0, sid=10, pid=5), buy("g2", T0 + 60, sid=10, pid=6, bid=2),
            Ev("i1", "inventory", T0 + 90, None, 10, 5, on_hand=3)]
    poison = [buy("p1", T0 + 120, sid=10, pid=5, sales=math.inf), buy("p2", T0 + 120, sid=11, pid=5, sales=math.inf)]
    logic = StoreShardLogic(None, flush_s=0.0)
    out = _run(logic, [good[0], poison[0], good[1], poison[1], good[2]])
    reference = StoreShardLogic(None, flush_s=0.0)
    _run(reference, good)
    assert logic.snapshot() == reference.snapshot()  # as_of not moved by p1; no store 11, no pair (11, 5)
    dead = [d for flush in out for d in flush.dead]
    assert len(dead) == 2 and all("OverflowError" in r for r, _ in dead), dead
    rows = [r for flush in out for r in flush.online]
    assert {r[1] for r in rows if r[0] == "store_product"} == {(10, 5), (10, 6)}


def test_old_pair_keys_are_migrated_on_restore():
    from streaming.features.store import StoreProductState

    old_key = (3 << 32) | 99
    shard = StoreShard(pairs={old_key: StoreProductState(as_of=T0), (2**31 << 32) | 1: StoreProductState()},
                       dirty_pairs={old_key}, pair_shift=32)
    raw = msgspec.msgpack.decode(msgspec.msgpack.encode(shard))
    old_snapshot = msgspec.msgpack.encode(raw[:-1])  # as written before the field existed
    logic = StoreShardLogic(old_snapshot, flush_s=0.0)
    assert set(logic.shard.pairs) == {pair_key(3, 99)} and logic.shard.dirty_pairs == {pair_key(3, 99)}
    assert logic.shard.pair_shift == 44
    rows = logic.rows()
    assert [r[1] for r in rows] == [(3, 99)]
    fresh = StoreShardLogic(logic.snapshot(), flush_s=0.0)  # the new layout restores as is
    assert set(fresh.shard.pairs) == {pair_key(3, 99)}
