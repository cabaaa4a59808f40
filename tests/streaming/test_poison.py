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
from streaming.customer_shard import CustomerShardLogic
from streaming.features.event import DAY, HOUR, NO_TIME, Ev, admit
from streaming.features.small_pairs import encode_hook
from streaming.features.store_product import pair_key
from streaming.shards import Work
from streaming.store_shard import StoreShard, StoreShardLogic

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
    from streaming.features.store_product import StoreProductState

    old_key = (3 << 32) | 99
    shard = StoreShard(pairs={old_key: StoreProductState(as_of=T0), (2**31 << 32) | 1: StoreProductState()},
                       dirty_pairs={old_key}, pair_shift=32)
    raw = msgspec.msgpack.decode(msgspec.msgpack.Encoder(enc_hook=encode_hook).encode(shard))
    for state in raw[1].values():  # the pairs as written before their sales were columns
        state[1] = []
        del state[-2:]
    old_snapshot = msgspec.msgpack.encode(raw[:-2])  # as written before the singles and the small pairs
    logic = StoreShardLogic(old_snapshot, flush_s=0.0)
    assert set(logic.shard.pairs) == {pair_key(3, 99)} and logic.shard.dirty_pairs == {pair_key(3, 99)}
    assert logic.shard.pair_shift == 44
    rows = logic.rows()
    assert [r[1] for r in rows] == [(3, 99)]
    fresh = StoreShardLogic(logic.snapshot(), flush_s=0.0)  # the new layout restores as is
    assert set(fresh.shard.pairs) == {pair_key(3, 99)}



def test_pairs_that_sold_once_in_an_older_snapshot_resume_as_small_pairs():
    """A snapshot from before the small pairs held a pair that sold once as (time, units, as_of) in `singles`:
    it resumes in the small pairs, with the rows of the state it stands for, and sells on from there."""
    from streaming.features.store_product import Counts, StoreProductState, Times, store_product_values

    key = pair_key(3, 99)
    shard = StoreShard(singles={key: (T0, 2, T0 + 60)})
    raw = msgspec.msgpack.decode(msgspec.msgpack.Encoder(enc_hook=encode_hook).encode(shard))
    logic = StoreShardLogic(msgspec.msgpack.encode(raw[:-1]), flush_s=0.0)  # as written before `small`
    assert not logic.shard.singles and key in logic.shard.small
    state = StoreProductState(as_of=T0 + 60, last_sold_at=T0, ts=Times((T0,)), qs=Counts((2,)))
    assert logic.shard.pair(key) == state
    logic.shard.dirty_pairs.add(key)
    assert [r[2] for r in logic.rows()] == [store_product_values(state, T0 + 60)]
    logic.apply([Ev("b", "purchase", T0 + 120, 1, 3, 99, 7, 1, 1.0)])
    sp = logic.shard.pair(key)
    assert list(zip(sp.ts, sp.qs, strict=True)) == [(T0, 2), (T0 + 120, 1)]


# ---- live: the same pills through both doors of a running flow ---------------------------------------------------

BASE = datetime(2017, 6, 1, 12, tzinfo=UTC)  # the isolated flow's event clock starts here
NORMAL_S = 2 * 3600.0  # the random events' normal offsets from BASE: within +- 2 h (so far below the skew)


@pytest.fixture(scope="module")
def live(feast_applied, tmp_path_factory):
    """An isolated live flow and server (own data dir and Redis db) whose event clock is at BASE."""
    from pantry.clock import read_watermark
    from pantry.redis_server import sync_client
    from tests.serving.conftest import start_server
    from tests.streaming.test_live import LiveFlow, wait_for
    from tests.streaming.test_recovery import isolated

    settings = isolated(feast_applied, tmp_path_factory.mktemp("poison"), 9)
    client = sync_client(settings)
    server = start_server(settings, tmp_path_factory.mktemp("poison-logs"))
    flow = LiveFlow(settings).__enter__()
    try:
        xadd_raw(client, [{"type": "product_view", "event_id": "seed", "ts": BASE.isoformat(), "customer_id": 1,
                           "product_id": 1}])
        assert wait_for(lambda: read_watermark(client) == BASE, 60), "live flow never started"
        yield settings, client, server, flow
    finally:
        server.stop()
        flow.__exit__(None, None, None)


def xadd_raw(client, raws: list[dict]) -> int:
    """XADD payloads as any producer could write them (no schema on the way); those msgpack cannot hold are skipped."""
    from pantry.keys import EVENT_FIELD, EVENTS_STREAM

    pipe = client.pipeline(transaction=False)
    n = 0
    for raw in raws:
        try:
            payload = msgspec.msgpack.encode(raw)
        except OverflowError:  # an int of 2^64 or more: no msgpack producer can write it
            continue
        pipe.xadd(EVENTS_STREAM, {EVENT_FIELD: payload})
        n += 1
    pipe.execute()
    return n


def dead_letters(client, after: bytes = b"-") -> dict[str, str]:
    """event_id -> reason of the dead letters after stream id `after`."""
    from pantry.keys import DEAD_LETTER_STREAM

    out = {}
    for _, fields in client.xrange(DEAD_LETTER_STREAM, min=after):
        try:
            payload = msgspec.msgpack.decode(fields[b"e"])
        except msgspec.DecodeError:
            continue
        eid = payload.get("event_id") if isinstance(payload, dict) else payload[0] if isinstance(payload, list) \
            else None
        if isinstance(eid, str):
            out[eid] = fields[b"reason"].decode()
    return out


def _last_dead_id(client) -> bytes:
    from pantry.keys import DEAD_LETTER_STREAM

    last = client.xrevrange(DEAD_LETTER_STREAM, count=1)
    return b"(" + last[0][0] if last else b"-"


def _purchase(eid: str, ts: datetime, **kw) -> dict:
    return {"type": "purchase", "event_id": eid, "ts": ts.isoformat(), "customer_id": 31, "store_id": 7,
            "basket_id": 1, "product_id": 11, "quantity": 1, "sales_value": 2.0, **kw}


def _repertoire(events_http, customer_id: int) -> list[int]:
    response = events_http.post("/v1/features", json={"features": ["customer_repertoire:repertoire_product_ids"],
                                                      "entities": {"customer_id": [customer_id]}})
    assert response.status_code == 200, response.text
    return response.json()["results"][1]["values"][0] or []


def _client(server):
    import httpx

    from tests.serving.conftest import api_headers

    return httpx.Client(base_url=server.url, timeout=10.0, headers=api_headers())


def test_poison_pills_by_xadd_become_dead_letters_and_the_flow_goes_on(live):
    from pantry.clock import read_watermark
    from streaming import runner
    from tests.streaming.test_live import wait_for

    settings, client, server, flow = live
    after = _last_dead_id(client)
    t = BASE + timedelta(minutes=1)
    pills = {
        "x-ts-2100": _purchase("x-ts-2100", datetime(2100, 1, 1, tzinfo=UTC)),
        "x-ts-2300": _purchase("x-ts-2300", datetime(2300, 1, 1, tzinfo=UTC)),
        "x-future": _purchase("x-future", BASE + timedelta(days=2)),  # within the hard bounds, past the skew
        "x-sales-1e308": _purchase("x-sales-1e308", t, sales_value=1e308),
        "x-sales-inf": _purchase("x-sales-inf", t, sales_value=math.inf),
        "x-sales-nan": _purchase("x-sales-nan", t, sales_value=math.nan),
        "x-cid-2^63": _purchase("x-cid-2^63", t, customer_id=2**63),
        "x-cid-2^64-1": _purchase("x-cid-2^64-1", t, customer_id=2**64 - 1),
        "x-bid-2^63": _purchase("x-bid-2^63", t, basket_id=2**63),
        "x-store-2^31": _purchase("x-store-2^31", t, store_id=2**31),
        "x-product-2^44": _purchase("x-product-2^44", t, product_id=2**44),
    }
    fragments = {"x-ts-2100": "ts", "x-ts-2300": "ts", "x-future": "future", "x-sales-1e308": "sales_value",
                 "x-sales-inf": "sales_value", "x-sales-nan": "sales_value", "x-cid-2^63": "customer_id",
                 "x-cid-2^64-1": "customer_id", "x-bid-2^63": "basket_id", "x-store-2^31": "store_id",
                 "x-product-2^44": "product_id"}
    # product ids >= 2^32: two pairs that collided under the old key layout, both valid
    pairs = [_purchase("x-pair-a", t, store_id=1, product_id=2**32 + 5, basket_id=2),
             _purchase("x-pair-b", t, store_id=2, product_id=5, basket_id=3, quantity=3)]
    xadd_raw(client, list(pills.values()) + pairs)
    assert wait_for(lambda: set(pills) <= set(dead_letters(client, after)), 5.0), dead_letters(client, after)
    dead = dead_letters(client, after)
    for eid, fragment in fragments.items():
        assert fragment in dead[eid], (eid, dead[eid])
    assert not {"x-pair-a", "x-pair-b"} & set(dead)
    assert flow.thread.is_alive() and flow.error is None
    assert read_watermark(client) < BASE + timedelta(days=1)  # no pill moved the event clock
    assert runner.read_counters(client)["future"] >= 1

    # the pairs are two rows (no collision); a valid purchase afterwards reaches buy-again within 1 s
    from pantry.featurestore import repo

    fs = repo.store(settings)

    def units(store_id, product_id):
        return fs.get_online_features(features=["store_product:units_7d"],
                                      entity_rows=[{"store_id": store_id, "product_id": product_id}]
                                      ).to_dict()["units_7d"][0]

    assert wait_for(lambda: (units(1, 2**32 + 5), units(2, 5)) == (1, 3), 2.0), (units(1, 2**32 + 5), units(2, 5))
    with _client(server) as http:
        sent = time.monotonic()
        ok = http.post("/v1/events", json={"events": [_purchase("x-after", t, customer_id=4242, product_id=77)]})
        assert ok.status_code == 202, ok.text
        assert wait_for(lambda: 77 in _repertoire(http, 4242), 1.0), "purchase after the pills not in buy-again in 1 s"
        assert time.monotonic() - sent < 1.5


# ---- hypothesis: >= 10,000 random and extreme events through both doors ----------------------------------------

from hypothesis import HealthCheck, given  # noqa: E402
from hypothesis import settings as hsettings  # noqa: E402
from hypothesis import strategies as hs  # noqa: E402

EXAMPLES, MIN_EVENTS, MAX_EVENTS = 110, 46, 60  # per example: the list goes to the API and by XADD
EDGE_INTS = [-1, 0, 1, 2**19 - 1, 2**19, 2**31, 2**32, 2**32 + 5, 2**44 - 1, 2**44, 2**62, 2**63 - 1, 2**63,
             2**64 - 1, 2**64]
INTS = hs.one_of(hs.integers(0, 3000), hs.sampled_from(EDGE_INTS))
MONEY = hs.one_of(hs.floats(0, 100, allow_nan=False),
                  hs.sampled_from([-1.0, -0.0, 1e6, 1e6 + 1, 1e308, math.inf, -math.inf, math.nan]))
FAR = [timedelta(days=1, hours=3), timedelta(days=2), timedelta(days=400)]  # past any reachable watermark + skew


def _ts(draw) -> str:
    kind = draw(hs.integers(0, 9))
    if kind < 6:  # normal: in the 9 minutes before BASE + NORMAL_S (never late: the clock cannot pass that)
        return (BASE + timedelta(seconds=draw(hs.floats(NORMAL_S - 540, NORMAL_S, allow_nan=False)))).isoformat()
    if kind == 6:  # within NORMAL_S of BASE: many late
        return (BASE + timedelta(seconds=draw(hs.floats(-NORMAL_S, NORMAL_S, allow_nan=False)))).isoformat()
    if kind == 7:
        return (BASE + draw(hs.sampled_from(FAR))).isoformat()
    if kind == 8:
        return draw(hs.sampled_from(["1999-12-31T23:59:59Z", "2100-01-01T00:00:00Z", "2300-01-01T00:00:00Z",
                                     "9999-12-31T23:59:59+00:00", "0001-01-01T00:00:00Z"]))
    return draw(hs.sampled_from(["2017-06-01T12:00:00", "soon", "", "2017-13-01T00:00:00Z"]))


FIELDS = {
    "purchase": ({"basket_id": INTS, "product_id": INTS},
                 {"quantity": INTS, "sales_value": MONEY, "discounts": MONEY}),
    "add_to_cart": ({"product_id": INTS}, {"quantity": INTS}),
    "remove_from_cart": ({"product_id": INTS}, {"quantity": INTS}),
    "product_view": ({"product_id": INTS}, {}),
    "inventory": ({"store_id": INTS, "product_id": INTS, "on_hand": INTS}, {}),
    "coupon_redemption": ({"coupon_upc": INTS, "campaign_id": INTS}, {}),
    "substitution_feedback": ({"original_product_id": INTS, "substitute_product_id": INTS,
                               "accepted": hs.booleans()}, {}),
    "impression": ({"decision_id": hs.text(max_size=3) | hs.sampled_from(["d" * 128, "d" * 129])},
                   {"product_id": INTS}),
    "click": ({"decision_id": hs.text(max_size=3)}, {"product_id": INTS}),
    "teleport": ({}, {"x": INTS}),
}


@hs.composite
def raw_event(draw) -> dict:
    kind = draw(hs.sampled_from(sorted(FIELDS)))
    required, optional = FIELDS[kind]
    common = {k: INTS for k in ("customer_id", "store_id") if k not in required}
    body = draw(hs.fixed_dictionaries(required, optional={**common, **optional}))
    return {"type": kind, "ts": _ts(draw), **body}


def _jsonable(value):
    """JSON has no nan or inf: null and a still out-of-bounds number instead (the literal 1e400 is tested in
    tests/serving/test_events_features.py)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else math.copysign(1e308, value)
    return value


def _is_far(ts: str) -> bool:
    """Within the hard bounds but past any watermark + skew this flow can reach."""
    try:
        t = datetime.fromisoformat(ts)
    except ValueError:
        return False
    return t.tzinfo is not None and BASE + FAR[0] <= t < events.TS_MAX


class Tally:
    api = xadd = accepted_by_api = far = 0


def test_random_and_extreme_events_never_break_the_flow(live):
    from pantry.clock import read_watermark
    from pantry.keys import EVENTS_STREAM
    from streaming import runner
    from tests.streaming.test_live import wait_for

    _settings, client, server, flow = live
    tally = Tally()
    started = time.monotonic()
    limit = BASE + timedelta(seconds=NORMAL_S)  # no accepted event is later: the watermark must never pass it

    with _client(server) as http:

        @hsettings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                   suppress_health_check=list(HealthCheck))
        @given(hs.lists(raw_event(), min_size=MIN_EVENTS, max_size=MAX_EVENTS))
        def run(raws: list[dict]) -> None:
            n = tally.api
            batch = [{**{k: _jsonable(v) for k, v in raw.items()}, "event_id": f"h-a-{n + i}"}
                     for i, raw in enumerate(raws)]
            tally.api += len(batch)
            tally.far += sum(_is_far(raw["ts"]) for raw in raws)
            response = http.post("/v1/events", json={"events": batch})
            assert response.status_code in (202, 400), response.text  # never a 5xx
            if response.status_code == 400:
                bad = {e["index"] for e in response.json()["errors"]}
                rest = [e for i, e in enumerate(batch) if i not in bad]
                if rest:  # the errors named exactly the bad events: the others are accepted as they are
                    again = http.post("/v1/events", json={"events": rest})
                    assert again.status_code == 202, again.text
                    tally.accepted_by_api += len(rest)
            else:
                tally.accepted_by_api += len(batch)
            tally.xadd += xadd_raw(client, [{**raw, "event_id": f"h-x-{n + i}"} for i, raw in enumerate(raws)])
            assert flow.thread.is_alive() and flow.error is None, flow.error
            watermark = read_watermark(client)
            assert watermark is not None and watermark <= limit, watermark

        run()

    # the flow drains every entry (each counted once: processed, duplicate, late, invalid or future) and lives
    def drained() -> bool:
        c = runner.read_counters(client)
        return sum(c.get(k, 0) for k in ("processed", "duplicate", "late", "invalid", "future")) >= \
            client.xlen(EVENTS_STREAM)

    assert wait_for(drained, 60.0), (runner.read_counters(client), client.xlen(EVENTS_STREAM))
    assert flow.thread.is_alive() and flow.error is None
    assert read_watermark(client) <= limit
    counters = runner.read_counters(client)
    total = tally.api + tally.xadd
    elapsed = time.monotonic() - started
    print(f"\nhypothesis: {total} events ({tally.api} by the API, {tally.accepted_by_api} accepted; {tally.xadd} by "
          f"XADD) in {elapsed:.1f}s; counters {counters}")
    assert total >= 10_000 and tally.accepted_by_api > 1000 and tally.far > 100
    assert counters["future"] > 0 and counters["invalid"] > 0 and counters["processed"] > 1000

    # and a valid purchase afterwards reaches buy-again within a second
    with _client(server) as http:
        ts = BASE + timedelta(seconds=NORMAL_S)
        ok = http.post("/v1/events", json={"events": [_purchase("h-after", ts, customer_id=4343, product_id=99)]})
        assert ok.status_code == 202, ok.text
        assert wait_for(lambda: 99 in _repertoire(http, 4343), 1.0), "purchase not in buy-again within 1 s"
