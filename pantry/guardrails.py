"""Guardrails, the canary ramp and the per-arm report of an experiment: pure functions of the experiment and the
KPI totals of its two arms (pantry.kpis.Counts), so they are tested with data and read the same in every process.

Guardrails (each judged only once its minimum sample is there; the first that applies is the breach):
- `fallback_rate`: the treatment's fallback rate (any fallback: model errors, an unavailable treatment, ...) is more
  than `max_fallback_increase` above the control's (after `min_decisions` treatment decisions);
- `p99_latency`: the treatment's p99 decision latency is above `max_p99_ms`, or above the control's p99 x
  `max_p99_factor` (after `min_decisions`);
- `ctr_drop` / `conversion_drop`: the treatment's CTR (clicks / impressions) or conversion (converted decisions /
  decisions) is lower than the control's with a two-sided p-value below `max_p_value` (two-proportion z-test; after
  `min_impressions` impressions, resp. `min_decisions` decisions, in each arm). The loop looks every second, so the
  p-value threshold is strict (default 0.001): repeated looks at a noisy difference would otherwise stop a treatment
  that is no worse.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import msgspec

from pantry.experiments import Experiment
from pantry.kpis import Counts, KpiKey
from pantry.stats import Difference, Rate, difference, rate


class Breach(msgspec.Struct, frozen=True):
    guardrail: str  # fallback_rate | p99_latency | ctr_drop | conversion_drop
    detail: str  # the numbers, for the experiment's reason and the audit log


def arm_totals(totals: Mapping[KpiKey, Counts], experiment_id: str) -> tuple[Counts, Counts, dict[str, list[str]]]:
    """(control, treatment) totals of one experiment over every day, version and surface, and the versions that
    answered in each arm."""
    arms = {"control": Counts(), "treatment": Counts()}
    versions: dict[str, set[str]] = {"control": set(), "treatment": set()}
    for key, counts in totals.items():
        if key.experiment == experiment_id and key.arm in arms:
            arms[key.arm].add(counts)
            versions[key.arm].add(key.version)
    return arms["control"], arms["treatment"], {arm: sorted(v) for arm, v in versions.items()}


def _pct(x: float) -> str:
    return f"{100.0 * x:.2f}%"


def check(experiment: Experiment, control: Counts, treatment: Counts) -> Breach | None:
    g = experiment.guardrails
    if treatment.decisions >= g.min_decisions and control.decisions > 0:
        t_rate, c_rate = treatment.fallbacks / treatment.decisions, control.fallbacks / control.decisions
        if t_rate - c_rate > g.max_fallback_increase:
            return Breach("fallback_rate", f"treatment fallback rate {_pct(t_rate)} ({treatment.fallbacks}/"
                          f"{treatment.decisions}, model errors {treatment.model_errors}) vs control {_pct(c_rate)} "
                          f"({control.fallbacks}/{control.decisions}): more than +{_pct(g.max_fallback_increase)}")
    if treatment.decisions >= g.min_decisions:
        t_p99, c_p99 = treatment.latency_quantile_ms(0.99), control.latency_quantile_ms(0.99)
        if t_p99 is not None and t_p99 > g.max_p99_ms:
            return Breach("p99_latency", f"treatment p99 {t_p99:g} ms above the bound {g.max_p99_ms:g} ms "
                          f"({treatment.decisions} decisions)")
        if t_p99 is not None and c_p99 is not None and t_p99 > c_p99 * g.max_p99_factor:
            return Breach("p99_latency", f"treatment p99 {t_p99:g} ms above control's {c_p99:g} ms x "
                          f"{g.max_p99_factor:g} ({treatment.decisions} decisions)")
    drops = (("ctr_drop", "CTR", treatment.clicks, treatment.impressions, control.clicks, control.impressions,
              g.min_impressions),
             ("conversion_drop", "conversion", treatment.converted, treatment.decisions, control.converted,
              control.decisions, g.min_decisions))
    for name, label, ts, tn, cs, cn, minimum in drops:
        if tn < minimum or cn < minimum:
            continue
        d = difference(ts, tn, cs, cn)
        if d.diff is not None and d.diff < 0 and d.p_value is not None and d.p_value < g.max_p_value:
            return Breach(name, f"treatment {label} {_pct(ts / tn)} ({ts}/{tn}) vs control {_pct(cs / cn)} "
                          f"({cs}/{cn}): {d.diff * 100:+.2f} pts, p={d.p_value:.2g} < {g.max_p_value:g}")
    return None


def advance(experiment: Experiment, treatment: Counts, now: float) -> Experiment | None:
    """The experiment at its next ramp stage when the current stage has met its minimum decisions and seconds
    (call only while the guardrails hold); None when it stays. The last stage completing does not promote: that is
    a person's call (POST /admin/experiments/{id}/promote)."""
    if experiment.stage + 1 >= len(experiment.ramp):
        return None
    if treatment.decisions - experiment.stage_start_decisions < experiment.stage_min_decisions:
        return None
    if now - experiment.stage_started_at < experiment.stage_min_seconds:
        return None
    stage = experiment.stage + 1
    return msgspec.structs.replace(experiment, stage=stage, share=experiment.ramp[stage], stage_started_at=now,
                                   stage_start_decisions=treatment.decisions)


# ---- the report ---------------------------------------------------------------------------------------------


class ArmReport(msgspec.Struct, frozen=True):
    arm: str
    versions: list[str]  # the versions that answered in this arm (the control's answers a failed treatment)
    decisions: int
    fallbacks: int
    model_errors: int
    impressions: int
    clicks: int
    add_to_carts: int
    purchases: int
    converted: int
    revenue: float
    revenue_per_1000_decisions: float | None
    ctr: Rate  # clicks / impressions
    conversion: Rate  # decisions with an attributed purchase / decisions
    add_to_cart_rate: Rate  # attributed add-to-carts / impressions
    fallback_rate: Rate
    substitution_acceptance: Rate  # accepted / (accepted + rejected)
    coupon_redemption: Rate  # redeemed / offered
    p50_ms: float | None  # upper bound of the latency bucket (None: no decisions, or past the last bound)
    p99_ms: float | None


class Comparison(msgspec.Struct, frozen=True):
    """treatment - control, with 95% intervals and two-sided p-values."""

    ctr: Difference
    conversion: Difference
    add_to_cart_rate: Difference
    fallback_rate: Difference
    revenue_per_1000_decisions: float | None  # a difference of totals: no interval (no per-decision variance kept)
    substitution_acceptance: Difference  # accepted / (accepted + rejected) substitution feedback
    coupon_redemption: Difference  # redeemed / offered coupons


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def arm_report(arm: str, c: Counts, versions: list[str]) -> ArmReport:
    return ArmReport(
        arm, versions, c.decisions, c.fallbacks, c.model_errors, c.impressions, c.clicks, c.add_to_carts,
        c.purchases, c.converted, round(c.revenue, 2),
        round(1000.0 * c.revenue / c.decisions, 2) if c.decisions else None,
        rate(c.clicks, c.impressions), rate(c.converted, c.decisions), rate(c.add_to_carts, c.impressions),
        rate(c.fallbacks, c.decisions), rate(c.subs_accepted, c.subs_accepted + c.subs_rejected),
        rate(c.coupons_redeemed, c.coupons_offered), _finite(c.latency_quantile_ms(0.5)),
        _finite(c.latency_quantile_ms(0.99)))


def compare(control: Counts, treatment: Counts) -> Comparison:
    t, c = treatment, control
    rev = (1000.0 * (t.revenue / t.decisions - c.revenue / c.decisions)) if t.decisions and c.decisions else None
    return Comparison(difference(t.clicks, t.impressions, c.clicks, c.impressions),
                      difference(t.converted, t.decisions, c.converted, c.decisions),
                      difference(t.add_to_carts, t.impressions, c.add_to_carts, c.impressions),
                      difference(t.fallbacks, t.decisions, c.fallbacks, c.decisions),
                      round(rev, 2) if rev is not None else None,
                      difference(t.subs_accepted, t.subs_accepted + t.subs_rejected, c.subs_accepted,
                                 c.subs_accepted + c.subs_rejected),
                      difference(t.coupons_redeemed, t.coupons_offered, c.coupons_redeemed, c.coupons_offered))
