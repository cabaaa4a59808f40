"""The simulator's rules on a tiny hand-made visit: which events it yields, and the ordering rule. No service."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from load_tests.simulate import rules
from load_tests.simulate.schedule import Schedule
from load_tests.simulate.script import OfferMemory, Reply, visit_script
from load_tests.simulate.visits import Line, Redemption, SubstitutionAsk, Visit, substitution_asks
from pantry import events as ev
from pantry.client import Call

T = datetime(2017, 11, 3, 17, 5, tzinfo=UTC)
MILK, BREAD, EGGS, OTHER_MILK, JAM = 101, 202, 303, 104, 505
VISIT = Visit(
    customer_id=7, ts=T, store_id=400, basket_id=9000,
    lines=(Line("tx-1", MILK, 1, 2.5, 0.0), Line("tx-2", BREAD, 2, 3.0, 0.5), Line("tx-3", EGGS, 1, 1.9, 0.0)),
    redemptions=(Redemption("cr-1", 55_000, 18),),
    substitution_asks=(SubstitutionAsk(usual_product_id=OTHER_MILK, bought_product_id=MILK),),
)
SHOWN = rules.Shown(
    rec_decision="rec-1", recommended=(JAM, MILK, 999),
    nba_decision="nba-1", actions=(rules.ShownAction(None, 55_000, 18), rules.ShownAction(BREAD, None, None)),
    sub_decision="sub-1", offered={OTHER_MILK: (888, MILK)},
    coupons_today={55_000: "nba-1"},
)


def by_type(events):
    return Counter(type(e).__struct_config__.tag for e in events)


def test_a_visit_yields_impressions_clicks_feedback_purchases_and_redemptions_in_that_order():
    out = rules.outcome_events(VISIT, SHOWN)
    assert by_type(out) == {"impression": 3 + 2 + 2, "click": 1 + 2, "substitution_feedback": 1, "purchase": 3,
                            "coupon_redemption": 1}
    kinds = [type(e).__struct_config__.tag for e in out]
    assert kinds == sorted(kinds, key=["impression", "click", "substitution_feedback", "purchase",
                                       "coupon_redemption"].index)
    assert all(e.ts == T and e.customer_id == 7 for e in out)
    for e in out:  # every event is valid against the schema the API enforces
        ev.decode_json(ev.encode_json(e))
    assert len({e.event_id for e in out}) == len(out)


def test_clicks_and_purchases_name_the_decision_that_showed_the_item():
    out = rules.outcome_events(VISIT, SHOWN)
    clicks = {(e.decision_id, e.product_id) for e in out if isinstance(e, ev.Click)}
    assert clicks == {("rec-1", MILK), ("nba-1", None), ("nba-1", BREAD)}  # coupon redeemed, product bought
    bought = {e.product_id: e.decision_id for e in out if isinstance(e, ev.Purchase)}
    # milk: recommended AND the accepted substitute -> the recommendation wins; bread: an action; eggs: nothing
    assert bought == {MILK: "rec-1", BREAD: "nba-1", EGGS: None}
    purchases = [e for e in out if isinstance(e, ev.Purchase)]
    assert [p.event_id for p in purchases] == ["tx-1", "tx-2", "tx-3"]  # the data's own ids
    assert purchases[1].quantity == 2 and purchases[1].discounts == 0.5 and purchases[1].basket_id == 9000


def test_substitution_accepted_only_when_the_offer_is_what_they_bought():
    accepted = rules.substitution_feedback(VISIT, SHOWN)
    assert [(f.original_product_id, f.substitute_product_id, f.accepted, f.decision_id) for f in accepted] == [
        (OTHER_MILK, MILK, True, "sub-1")]
    refused = rules.substitution_feedback(VISIT, rules.Shown(sub_decision="sub-2", offered={OTHER_MILK: (888, 777)}))
    assert [(f.substitute_product_id, f.accepted) for f in refused] == [(888, False)]  # the top one, refused
    assert rules.substitution_feedback(VISIT, rules.Shown(sub_decision="sub-3", offered={OTHER_MILK: ()})) == []


def test_redemption_names_the_offer_only_when_the_coupon_was_offered():
    offered = rules.redemptions(VISIT, SHOWN)
    assert [(r.coupon_upc, r.campaign_id, r.decision_id) for r in offered] == [(55_000, 18, "nba-1")]
    assert rules.redemptions(VISIT, rules.Shown())[0].decision_id is None


def test_nothing_shown_still_posts_the_real_purchases_without_decisions():
    out = rules.outcome_events(VISIT, rules.Shown())
    assert by_type(out) == {"purchase": 3, "coupon_redemption": 1}
    assert all(getattr(e, "decision_id", None) is None for e in out)


def test_the_substitution_ask_rule():
    types = {MILK: "milk", OTHER_MILK: "milk", 105: "milk", BREAD: "bread", EGGS: "eggs"}
    history = {"milk": Counter({OTHER_MILK: 5, 105: 2, MILK: 9}), "bread": Counter({BREAD: 3})}
    asks = substitution_asks([MILK, BREAD, EGGS], history, types)
    # milk: the most bought milk not in the basket; bread: only the one in the basket -> no ask; eggs: no history
    assert asks == (SubstitutionAsk(OTHER_MILK, MILK),)


def test_the_script_asks_then_posts_and_survives_failed_answers():
    script = visit_script(VISIT, OfferMemory())
    call = next(script)
    paths = []
    while True:
        paths.append(call.path)
        try:
            call = script.send(Reply(503, b"busy") if call.path != "/v1/events" else Reply(202, b"{}"))
        except StopIteration as done:
            result = done.value
            break
    assert paths == ["/v1/recommendations", "/v1/next-best-action", "/v1/substitutions", "/v1/events"]
    assert result.outcomes == {"purchase": 3, "coupon_redemption": 1}
    assert isinstance(call, Call)


def test_the_schedule_keeps_time_order_within_the_window_and_households_sequential():
    s = Schedule(max_in_flight=3, window_s=300)
    a = Visit(1, T)
    b = Visit(2, T + timedelta(seconds=200))
    same_household = Visit(1, T + timedelta(seconds=250))
    too_late = Visit(3, T + timedelta(seconds=301))
    s.start(a)
    assert s.can_start(b)
    s.start(b)
    assert not s.can_start(same_household)  # household 1 is in flight
    assert not s.can_start(too_late)  # more than 300 s after the oldest in flight
    s.finish(a)
    assert s.can_start(same_household) and s.can_start(too_late)
    s.start(same_household)
    s.start(too_late)
    assert not s.can_start(Visit(4, T + timedelta(seconds=301)))  # three in flight
