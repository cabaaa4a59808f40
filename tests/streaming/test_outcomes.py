"""The outcome join (streaming/outcomes.py) on decision-log entries as serving writes them: by decision_id, by
customer x product within the attribution window, waiting for a decision that comes later, counted once per
(decision, product, kind), erasure, retention, and a snapshot resumed mid-way giving the uninterrupted totals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pantry.kpis import KpiKey, decode_counts, encode_counts, latency_bucket, rates
from pantry.scoring import Action, Scored
from serving.decisions import DecisionLog
from streaming.features.event import Ev
from streaming.outcomes import Dec, OutcomeJoin, OutcomeShardLogic, OutWork, parse_decision

T0 = datetime(2017, 10, 31, 12, 0, tzinfo=UTC)
CUSTOMER = 4242


def entry(decision_id: str, items, *, model="recommender", version="v1", surface="for_you", now=T0,
          customer=CUSTOMER, fallback=None, elapsed_ms=4.0, arm="", experiment="") -> dict[bytes, bytes]:
    """A decision-log entry exactly as serving's DecisionLog XADDs it (its field/value pairs)."""
    log = DecisionLog(pipeline=None, maxlen=1000)
    log.record(decision_id=decision_id, endpoint="/v1/x", request={}, model=model, model_version=version,
               customer_id=customer, surface=surface, experiment_id=experiment, arm=arm, elapsed_ms=elapsed_ms,
               feature_ages={}, fallback=fallback, items=items, now=now)
    command = log.queue.get_nowait()[0]  # the XADD (then the customer index's commands)
    pairs = command[command.index(b"*") + 1:]
    return dict(zip(pairs[::2], pairs[1::2], strict=True))


def recs(*products: int) -> list[Scored]:
    return [Scored(product_id=p, score=1.0, reason="model") for p in products]


def ev(kind: str, n: int, minutes: float = 1, **kw) -> Ev:
    return Ev(f"e{n}", kind, (T0 + timedelta(minutes=minutes)).timestamp(), kw.pop("customer_id", CUSTOMER), **kw)


def key(version="v1", model="recommender", surface="for_you", day="2017-10-31", **kw) -> str:
    return KpiKey(day, model, version, surface=surface, **kw).field()


def test_decisions_count_with_fallbacks_latency_and_coupons():
    join = OutcomeJoin()
    join.add_decision(parse_decision(entry("d1", recs(1, 2), elapsed_ms=4.0)), 0.0)
    join.add_decision(parse_decision(entry("d2", recs(3), fallback="model_error", elapsed_ms=40.0)), 0.0)
    actions = [Action(action_type="coupon", score=1.0, rationale="r", campaign_id=7, coupon_upc=70),
               Action(action_type="buy_again", score=0.5, rationale="r", product_id=5)]
    join.add_decision(parse_decision(entry("d3", actions, model="next_best_action", surface="email")), 0.0)
    c = join.st.totals[key()]
    assert (c.decisions, c.fallbacks, c.model_errors) == (2, 1, 1)
    assert c.latency[latency_bucket(4.0)] == 1 and c.latency[latency_bucket(40.0)] == 1
    nba = join.st.totals[key(model="next_best_action", surface="email")]
    assert (nba.decisions, nba.coupons_offered) == (1, 1)
    assert rates(c)["fallback_rate"] == 0.5 and rates(c)["ctr"] is None  # nothing shown yet: unknown, not 0


def test_a_decision_read_again_counts_once_wherever_it_sits_among_the_customers():
    join = OutcomeJoin()
    entries = [entry(f"d{i}", recs(i), now=T0 + timedelta(seconds=i // 2)) for i in range(10)]  # pairs share `now`
    entries.insert(3, entry("late", recs(99), now=T0))  # logged after later ones, with an older `now`
    for e in entries:
        join.add_decision(parse_decision(e), 0.0)
    for e in (entries[0], entries[3], entries[4], entries[-1]):  # again: first, the late one, a pair's second, last
        join.add_decision(parse_decision(e), 0.0)
    assert join.st.totals[key()].decisions == 11
    ids = [r.dec.decision_id for r in join.st.recent[CUSTOMER]]
    assert sorted(ids) == [*sorted(f"d{i}" for i in range(10)), "late"] and len(ids) == 11
    times = [r.dec.t for r in join.st.recent[CUSTOMER]]
    assert times == sorted(times)


def test_join_by_decision_id_counts_each_decision_product_kind_once():
    join = OutcomeJoin()
    join.add_decision(parse_decision(entry("d1", recs(11, 12), arm="treatment", experiment="x1")), 0.0)
    for n, (kind, pid) in enumerate([("impression", 11), ("impression", 12), ("click", 11),
                                     ("impression", 11),  # a second impression (new event id): not counted again
                                     ("click", 11)]):
        join.add_outcome(ev(kind, n, decision_id="d1", product_id=pid), 0.0)
    c = join.st.totals[key(arm="treatment", experiment="x1")]
    assert (c.impressions, c.clicks) == (2, 1)
    assert join.st.counters["duplicate"] == 2 and join.st.counters["joined"] == 3
    assert rates(c)["ctr"] == 0.5


def test_an_impression_without_a_product_shows_every_item_of_the_answer_once():
    join = OutcomeJoin()
    join.add_decision(parse_decision(entry("d1", recs(11, 12, 13))), 0.0)
    join.add_outcome(ev("impression", 1, decision_id="d1", product_id=12), 0.0)  # one item seen first
    join.add_outcome(ev("impression", 2, decision_id="d1"), 0.0)  # then the whole answer: 11 and 13 more
    join.add_outcome(ev("impression", 3, decision_id="d1"), 0.0)  # again (a new event id): nothing new
    join.add_outcome(ev("click", 4, decision_id="d1", product_id=13), 0.0)
    c = join.st.totals[key()]
    assert (c.impressions, c.clicks) == (3, 1)
    assert join.st.counters["duplicate"] == 1 and join.st.counters["joined"] == 3


def test_an_outcome_before_its_decision_waits_and_joins_or_ends_unattributed():
    join = OutcomeJoin(pending_s=30.0)
    join.add_outcome(ev("impression", 1, decision_id="late", product_id=11), 100.0)
    join.add_outcome(ev("click", 2, decision_id="never", product_id=11), 100.0)
    assert join.st.counters["pending"] == 2 and not join.st.totals
    join.add_decision(parse_decision(entry("late", recs(11))), 101.0)
    assert join.st.totals[key()].impressions == 1 and join.st.counters["pending"] == 1
    join.expire_pending(129.0)
    assert join.st.counters["pending"] == 1  # still within its wait
    join.expire_pending(131.0)
    assert (join.st.counters["pending"], join.st.counters["unattributed"]) == (0, 1)
    assert join.st.totals[key()].clicks == 0


def test_attribution_by_customer_and_product_within_the_window_only():
    join = OutcomeJoin(window_s=86400.0)
    join.add_decision(parse_decision(entry("d1", recs(11, 12))), 0.0)
    join.add_decision(parse_decision(entry("d2", recs(12), version="v2", now=T0 + timedelta(hours=2))), 0.0)
    join.add_outcome(ev("purchase", 1, 60, product_id=11, sales_value=2.5), 0.0)  # d1 showed it: 1 h later
    join.add_outcome(ev("purchase", 2, 60, product_id=11, sales_value=2.5), 0.0)  # same line again: once
    join.add_outcome(ev("add_to_cart", 3, 180, product_id=12), 0.0)  # the latest decision showing 12: d2
    join.add_outcome(ev("purchase", 4, 25 * 60, product_id=12, sales_value=9.0), 0.0)  # 25 h after d1, 23 after d2
    join.add_outcome(ev("purchase", 5, 26 * 60, product_id=11, sales_value=1.0), 0.0)  # past d1's window
    join.add_outcome(ev("purchase", 6, 60, product_id=99, sales_value=1.0), 0.0)  # never shown
    v1, v2 = join.st.totals[key()], join.st.totals[key("v2")]
    assert (v1.purchases, v1.revenue, v1.converted, v1.add_to_carts) == (1, 2.5, 1, 0)
    assert (v2.purchases, v2.revenue, v2.converted, v2.add_to_carts) == (1, 9.0, 1, 1)
    assert join.st.counters["unmatched"] == 2 and join.st.counters["duplicate"] == 1
    assert rates(v1)["revenue_per_1000"] == 2500.0 and rates(v1)["conversion_rate"] == 1.0


def test_coupons_and_substitutions_are_attributed_by_campaign_and_original_product():
    join = OutcomeJoin()
    actions = [Action(action_type="coupon", score=1.0, rationale="r", campaign_id=7, coupon_upc=70)]
    join.add_decision(parse_decision(entry("n1", actions, model="next_best_action", surface="app")), 0.0)
    subs = [{"product_id": 20, "candidates": [{"product_id": 21, "score": 1.0}, {"product_id": 22, "score": 0.5}]}]
    join.add_decision(parse_decision(entry("s1", subs, model="substitutions", surface="substitutions")), 0.0)
    join.add_outcome(ev("coupon_redemption", 1, campaign_id=7, coupon_upc=70), 0.0)
    join.add_outcome(ev("coupon_redemption", 2, campaign_id=8, coupon_upc=80), 0.0)  # not offered
    join.add_outcome(ev("substitution_feedback", 3, original_product_id=20, accepted=True), 0.0)
    join.add_outcome(ev("substitution_feedback", 4, decision_id="s1", original_product_id=20, accepted=False), 0.0)
    nba = join.st.totals[key(model="next_best_action", surface="app")]
    assert (nba.coupons_offered, nba.coupons_redeemed) == (1, 1) and rates(nba)["coupon_redemption_rate"] == 1.0
    sub = join.st.totals[key(model="substitutions", surface="substitutions")]
    assert (sub.subs_accepted, sub.subs_rejected) == (1, 0)  # the first verdict on (s1, 20) counts
    join.add_outcome(ev("purchase", 5, product_id=21, sales_value=1.0), 0.0)  # a candidate counts as shown
    assert sub.purchases == 1


def test_forget_drops_the_customers_decisions_and_waiting_outcomes():
    join = OutcomeJoin()
    join.add_decision(parse_decision(entry("d1", recs(11))), 0.0)
    join.add_outcome(ev("click", 1, decision_id="d-later", product_id=11), 0.0)
    join.forget(CUSTOMER)
    assert CUSTOMER not in join.st.recent and CUSTOMER not in join.st.pending and join.st.counters["pending"] == 0
    join.add_outcome(ev("impression", 2, decision_id="d1", product_id=11), 0.0)
    assert join.st.totals[key()].impressions == 0  # d1 is gone: the impression now waits, never joins


def test_retention_drops_old_days_and_says_so():
    join = OutcomeJoin(retention_days=90)
    join.add_decision(parse_decision(entry("d1", recs(11))), 0.0)
    join.take_changes()
    join.advance((T0 + timedelta(days=89)).timestamp(), 0.0)
    assert key() in join.st.totals
    join.advance((T0 + timedelta(days=91)).timestamp(), 0.0)
    changed, deleted = join.take_changes()
    assert key() not in join.st.totals and deleted == [key()] and not changed
    join.add_decision(parse_decision(entry("d2", recs(11))), 0.0)  # a decision of a dropped day: not counted again
    assert join.st.counters["decision_expired"] == 1 and not join.st.totals


def test_a_snapshot_resumed_mid_way_ends_with_the_uninterrupted_totals():
    decisions = [parse_decision(entry(f"d{i}", recs(i, i + 1), customer=CUSTOMER + i % 3)) for i in range(6)]
    outcomes = [ev(kind, 10 * i + j, decision_id=f"d{i}", product_id=i + j, customer_id=CUSTOMER + i % 3)
                for i in range(6) for j, kind in enumerate(("impression", "click", "impression"))]
    works = [OutWork(outcomes[:4], decisions[:3], None), OutWork(outcomes[4:], decisions[3:], None)]
    args = {"flush_s": 0.0, "window_s": 86400.0, "per_customer": 64, "pending_s": 30.0, "retention_days": 90}

    whole = OutcomeShardLogic(None, **args)
    out = [f for w in works for f in whole.on_batch([w])[0]]
    first = OutcomeShardLogic(None, **args)
    first.on_batch([works[0]])
    resumed = OutcomeShardLogic(first.snapshot(), **args)
    flushed = resumed.on_batch([works[1]])[0]
    totals = {k: encode_counts(c) for k, c in flushed[-1].totals.items()}
    assert totals == {k: encode_counts(c) for k, c in out[-1].totals.items()}
    c = decode_counts(totals[key()])
    assert (c.decisions, c.impressions, c.clicks) == (6, 12, 6)  # per decision: impressions of i and i+2, a click


def test_the_gate_sends_what_no_feature_folds_to_the_outcome_join_only():
    """An impression or a redemption goes to its outcome shard, not to the customer's feature shard (it would move
    the customer's as_of and rewrite two rows); a click (a session kind) goes to both; a substitution's feedback to
    its outcome shard and to the shards that fold it into the feedback views (its customer's, its original's)."""
    from streaming.features.customer import SESSION_KINDS
    from streaming.features.event import FEATURE_KINDS
    from streaming.gate import GateLogic, Parsed

    assert SESSION_KINDS | {"purchase", "inventory"} == FEATURE_KINDS
    gate = GateLogic(None, outcome_tick_s=1.0)
    outcomes = [ev("impression", 1, decision_id="d1", product_id=11), ev("coupon_redemption", 2, campaign_id=7),
                ev("substitution_feedback", 3, decision_id="d2", original_product_id=11, product_id=12,
                   accepted=True)]
    [only_outcomes], _ = gate.on_batch([Parsed(outcomes, [], False, None)])
    shard = f"o{CUSTOMER % 16:02d}"
    assert len(only_outcomes.outcomes[shard].events) == 3
    assert {k: [e.kind for e in v] for k, v in only_outcomes.routes.items()} == {
        f"c{CUSTOMER % 16:02d}": ["substitution_feedback"], f"s{11 % 16:02d}": ["substitution_feedback"]}
    [with_click], _ = gate.on_batch([Parsed([ev("click", 4, decision_id="d1", product_id=11)], [], False, None)])
    assert [e.kind for e in with_click.routes[f"c{CUSTOMER % 16:02d}"]] == ["click"]
    assert with_click.outcomes == {}  # held for the next outcome tick
    gate.last_outcome_tick -= 1.0  # a tick later
    [ticked], _ = gate.on_batch([Parsed([], [], False, None)])
    assert [e.kind for e in ticked.outcomes[shard].events] == ["click"]
    assert len(ticked.outcomes) == 16 and gate.st.held_events == []


def test_outcomes_held_for_the_tick_survive_a_restart_from_the_gate_snapshot():
    """Outcomes and decisions wait in the gate until the next outcome tick; the source's position is already past
    them, so they are in the gate's snapshot: a gate resumed from it sends them at its first tick."""
    from streaming.gate import GateLogic, Parsed

    gate = GateLogic(None, outcome_tick_s=1.0)
    gate.on_batch([Parsed([], [], False, None)])  # the first batch ticks
    decision = Dec("d9", T0.timestamp(), CUSTOMER, key())
    [held], _ = gate.on_batch([Parsed([ev("impression", 5, decision_id="d9", product_id=11)], [], False, None,
                                      decisions=[decision])])
    assert held.outcomes == {}
    resumed = GateLogic(gate.snapshot(), outcome_tick_s=1.0)
    [ticked], _ = resumed.on_batch([Parsed([], [], False, None)])
    work = ticked.outcomes[f"o{CUSTOMER % 16:02d}"]
    assert [e.event_id for e in work.events] == ["e5"] and work.decisions == [decision]
