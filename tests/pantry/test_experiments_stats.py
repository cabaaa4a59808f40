"""pantry/stats.py, the experiment assignment (pantry/experiments.py) and the guardrails and ramp
(pantry/guardrails.py): pure functions, tested with counts (data, not mocks)."""

from __future__ import annotations

import math

import msgspec
import pytest

from pantry import experiments, guardrails, stats
from pantry.experiments import Experiment, Guardrails
from pantry.kpis import LATENCY_BOUNDS_MS, Counts, KpiKey, encode_counts, latency_bucket, merge_shards

# ---- stats --------------------------------------------------------------------------------------------------


def test_wilson_interval_matches_the_textbook_values():
    r = stats.rate(50, 100)
    assert r.rate == 0.5
    assert r.low == pytest.approx(0.4038, abs=1e-4) and r.high == pytest.approx(0.5962, abs=1e-4)
    zero = stats.rate(0, 20)
    assert zero.low == 0.0 and 0.15 < zero.high < 0.17  # 0.161: never a zero-width interval at 0
    assert stats.rate(3, 0).rate is None


def test_two_proportion_z_test_and_difference():
    # 120/1000 vs 100/1000: z = 1.43, p = 0.153 (pooled)
    p = stats.z_test(120, 1000, 100, 1000)
    assert p == pytest.approx(0.1530, abs=1e-3)
    d = stats.difference(120, 1000, 100, 1000)
    assert d.diff == pytest.approx(0.02)
    assert d.low < 0 < d.high  # not significant: the interval spans 0
    strong = stats.difference(200, 1000, 100, 1000)
    assert strong.low > 0 and strong.p_value < 1e-9
    assert stats.z_test(0, 10, 0, 10) == 1.0
    assert stats.difference(1, 0, 1, 10).p_value is None
    assert stats.two_sided_p(1.959963984540054) == pytest.approx(0.05, abs=1e-9)


# ---- assignment ----------------------------------------------------------------------------------------------


def _exp(share: float = 0.1, ramp: list[float] | None = None, **kw) -> Experiment:
    return experiments.new_experiment(model="recommender", control="a", treatment="b", share=share,
                                      ramp=ramp or [], guardrails=kw.pop("guardrails", Guardrails()),
                                      stage_min_decisions=kw.pop("stage_min_decisions", 100),
                                      stage_min_seconds=kw.pop("stage_min_seconds", 10.0), by="test", now=1000.0)


@pytest.mark.parametrize("share", [0.01, 0.05, 0.1, 0.25, 0.5, 0.9])
def test_assignment_share_within_one_point_over_10000_customers(share):
    # a fixed salt: the split of 10,000 customers is binomial around the share (sd 0.5 points at 0.5), so a random
    # salt misses 1 point ~5% of the time at share 0.5; the test is deterministic, docs/OPERATIONS.md has the spread
    exp = msgspec.structs.replace(_exp(share), salt="4f1c2a9d0b7e6a35")
    treated = sum(experiments.arm_of(exp, cid) == "treatment" for cid in range(10_000))
    assert abs(treated / 10_000 - share) <= 0.01, (share, treated)


def test_a_customer_keeps_the_arm_and_a_ramp_only_moves_control_to_treatment():
    exp = _exp(0.05)
    first = {cid: experiments.arm_of(exp, cid) for cid in range(5000)}
    assert all(experiments.arm_of(exp, cid) == arm for cid, arm in first.items())  # stable
    wider = msgspec.structs.replace(exp, share=0.25)
    for cid, arm in first.items():
        if arm == "treatment":
            assert experiments.arm_of(wider, cid) == "treatment"
    other = _exp(0.05)  # another experiment (salt): another split
    assert {c for c, a in first.items() if a == "treatment"} != \
        {c for c in range(5000) if experiments.arm_of(other, c) == "treatment"}


def test_record_round_trips_and_ramp_checks():
    exp = _exp(ramp=[0.01, 0.05, 0.25])
    assert exp.share == 0.01 and experiments.decode(experiments.encode(exp)) == exp
    assert experiments.check_ramp(None, [0.1, 0.05])
    assert experiments.check_ramp(0.5, [0.1, 0.5])
    assert experiments.check_ramp(None, [0.1, 1.5])
    assert experiments.check_ramp(None, []) and experiments.check_ramp(0.0, []) and experiments.check_ramp(1.1, [])
    assert experiments.check_ramp(0.1, []) is None and experiments.check_ramp(None, [0.1, 1.0]) is None
    stopped = experiments.ended(exp, "stopped", "why", "me", now=2000.0)
    assert experiments.expired(stopped, 1.0, 2000.0 + 86_401) and not experiments.expired(stopped, 1.0, 2001.0)
    assert not experiments.expired(exp, 0.0, 10**12)  # a running experiment is never deleted


# ---- guardrails ----------------------------------------------------------------------------------------------


def _counts(decisions=0, fallbacks=0, impressions=0, clicks=0, converted=0, latency_ms=3.0, **kw) -> Counts:
    lat = [0] * (len(LATENCY_BOUNDS_MS) + 1)
    lat[latency_bucket(latency_ms)] = decisions
    return Counts(decisions=decisions, fallbacks=fallbacks, impressions=impressions, clicks=clicks,
                  converted=converted, latency=lat, **kw)


G = Guardrails(min_decisions=200, max_fallback_increase=0.05, max_p99_ms=250.0, max_p99_factor=3.0,
               max_p_value=0.001, min_impressions=500)


def test_healthy_treatment_holds():
    control = _counts(10_000, 300, 40_000, 2000, 900)
    treatment = _counts(1000, 35, 4000, 210, 95)
    assert guardrails.check(_exp(guardrails=G), control, treatment) is None


def test_fallback_rate_breach_and_its_minimum():
    control = _counts(10_000, 300)
    exp = _exp(guardrails=G)
    breach = guardrails.check(exp, control, _counts(200, 200, model_errors=200))
    assert breach is not None and breach.guardrail == "fallback_rate"
    assert "100.00%" in breach.detail and "3.00%" in breach.detail
    assert guardrails.check(exp, control, _counts(199, 199)) is None  # below min_decisions: not judged
    assert guardrails.check(exp, control, _counts(1000, 79)) is None  # 7.9% vs 3%: within +5 points


def test_p99_latency_breaches():
    exp = _exp(guardrails=G)
    control = _counts(10_000, latency_ms=4.0)
    slow = guardrails.check(exp, control, _counts(500, latency_ms=400.0))
    assert slow.guardrail == "p99_latency" and "500 ms above the bound 250" in slow.detail
    relative = guardrails.check(exp, control, _counts(500, latency_ms=20.0))  # 20 > 5 x 3
    assert relative.guardrail == "p99_latency" and "control's 5 ms" in relative.detail
    assert guardrails.check(exp, control, _counts(500, latency_ms=7.0)) is None


def test_significant_ctr_and_conversion_drops():
    exp = _exp(guardrails=G)
    control = _counts(10_000, 0, 50_000, 5000, 1000)
    ctr = guardrails.check(exp, control, _counts(1000, 0, 5000, 300, 100))  # 6% vs 10%
    assert ctr.guardrail == "ctr_drop" and "p=" in ctr.detail
    conv = guardrails.check(exp, control, _counts(2000, 0, 10_000, 1000, 100))  # 5% vs 10%
    assert conv.guardrail == "conversion_drop"
    assert guardrails.check(exp, control, _counts(1000, 0, 5000, 470, 95)) is None  # a drop within noise
    assert guardrails.check(exp, control, _counts(1000, 0, 5000, 700, 150)) is None  # better is never a breach
    assert guardrails.check(exp, control, _counts(100, 0, 400, 0, 0)) is None  # below both minimums


def test_ramp_advances_only_after_its_minimum_and_never_promotes():
    exp = _exp(ramp=[0.01, 0.1, 1.0], stage_min_decisions=100, stage_min_seconds=10.0)
    assert guardrails.advance(exp, _counts(99), now=2000.0) is None  # too few decisions
    assert guardrails.advance(exp, _counts(100), now=1005.0) is None  # too soon
    nxt = guardrails.advance(exp, _counts(100), now=1010.0)
    assert (nxt.stage, nxt.share, nxt.stage_start_decisions, nxt.stage_started_at) == (1, 0.1, 100, 1010.0)
    assert guardrails.advance(nxt, _counts(150), now=5000.0) is None  # this stage's own minimum counts
    last = guardrails.advance(nxt, _counts(200), now=5000.0)
    assert last.share == 1.0 and last.status == "running"
    assert guardrails.advance(last, _counts(10_000), now=10**9) is None  # the end of the ramp: no auto-promotion
    assert guardrails.advance(_exp(0.2), _counts(10_000), now=10**9) is None  # no ramp


def test_arm_totals_and_report_from_kpi_keys():
    exp = _exp()
    totals = {
        KpiKey("2017-11-01", "recommender", "a", exp.id, "control", "for_you"): _counts(1000, 10, 4000, 400, 50,
                                                                                        revenue=500.0),
        KpiKey("2017-11-02", "recommender", "a", exp.id, "control", "buy_again"): _counts(1000, 10, 4000, 400, 50,
                                                                                          revenue=500.0),
        KpiKey("2017-11-01", "recommender", "b", exp.id, "treatment", "for_you"): _counts(200, 2, 800, 100, 20,
                                                                                          revenue=50.0),
        KpiKey("2017-11-01", "recommender", "a", "", "", "for_you"): _counts(5000),  # outside the experiment
    }
    control, treatment, versions = guardrails.arm_totals(totals, exp.id)
    assert (control.decisions, treatment.decisions, versions) == (2000, 200, {"control": ["a"], "treatment": ["b"]})
    report = guardrails.arm_report("control", control, versions["control"])
    assert report.ctr.rate == 0.1 and report.revenue_per_1000_decisions == 500.0 and report.p99_ms == 3.0
    diff = guardrails.compare(control, treatment)
    assert diff.ctr.diff == pytest.approx(0.025) and diff.revenue_per_1000_decisions == -250.0
    assert 0 < diff.ctr.p_value < 1 and not math.isnan(diff.conversion.low)


def test_merge_shards_sums_the_shards_and_keeps_only_the_asked_experiments():
    a = KpiKey("2017-11-01", "recommender", "a", "e1", "control", "for_you")
    b = KpiKey("2017-11-01", "recommender", "b", "e2", "treatment", "for_you")
    plain = KpiKey("2017-11-01", "recommender", "a", "", "", "for_you")
    shards = [{a.field().encode(): encode_counts(_counts(10)), plain.field().encode(): encode_counts(_counts(7))},
              {a.field().encode(): encode_counts(_counts(5)), b.field().encode(): encode_counts(_counts(3))}]
    assert {k: c.decisions for k, c in merge_shards(shards).items()} == {a: 15, b: 3, plain: 7}
    assert {k: c.decisions for k, c in merge_shards(shards, {"e1"}).items()} == {a: 15}
    assert merge_shards(shards, set()) == {}


def test_compare_gives_substitution_acceptance_and_coupon_redemption_differences():
    control = _counts(1000, subs_accepted=300, subs_rejected=700, coupons_offered=2000, coupons_redeemed=20)
    treatment = _counts(1000, subs_accepted=400, subs_rejected=600, coupons_offered=2000, coupons_redeemed=20)
    diff = guardrails.compare(control, treatment)
    assert diff.substitution_acceptance.diff == pytest.approx(0.1)
    assert diff.substitution_acceptance.low < 0.1 < diff.substitution_acceptance.high
    assert diff.substitution_acceptance.p_value < 1e-3
    assert diff.coupon_redemption.diff == pytest.approx(0.0) and diff.coupon_redemption.p_value > 0.5
