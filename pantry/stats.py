"""Rates with 95% confidence intervals and the two-proportion z-test: what an experiment report and the KPI-drop
guardrail need. Pure functions of counts (no numpy, no scipy: serving imports this)."""

from __future__ import annotations

import math

import msgspec

Z95 = 1.959963984540054  # the two-sided 95% normal quantile


class Rate(msgspec.Struct, frozen=True):
    """successes / n with its Wilson 95% interval (sound at small n and at rates near 0 or 1). n == 0: all None."""

    successes: float
    n: float
    rate: float | None
    low: float | None
    high: float | None


class Difference(msgspec.Struct, frozen=True):
    """treatment rate - control rate, its 95% interval (unpooled normal) and the two-sided p-value of "no
    difference" (pooled two-proportion z-test). None when either arm has no trials."""

    diff: float | None
    low: float | None
    high: float | None
    p_value: float | None


def rate(successes: float, n: float, z: float = Z95) -> Rate:
    if n <= 0:
        return Rate(successes, n, None, None, None)
    p = min(max(successes / n, 0.0), 1.0)
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Rate(successes, n, p, max(0.0, centre - half), min(1.0, centre + half))


def two_sided_p(z: float) -> float:
    """P(|Z| >= |z|) for a standard normal Z."""
    return math.erfc(abs(z) / math.sqrt(2.0))


def z_test(s_treatment: float, n_treatment: float, s_control: float, n_control: float) -> float | None:
    """The two-sided p-value of the pooled two-proportion z-test (None without trials in an arm; 1.0 when both
    rates are 0 or both 1: no evidence of a difference)."""
    if n_treatment <= 0 or n_control <= 0:
        return None
    pooled = (s_treatment + s_control) / (n_treatment + n_control)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_treatment + 1 / n_control))
    if se == 0:
        return 1.0
    return two_sided_p((s_treatment / n_treatment - s_control / n_control) / se)


def difference(s_treatment: float, n_treatment: float, s_control: float, n_control: float,
               z: float = Z95) -> Difference:
    if n_treatment <= 0 or n_control <= 0:
        return Difference(None, None, None, None)
    pt = min(max(s_treatment / n_treatment, 0.0), 1.0)
    pc = min(max(s_control / n_control, 0.0), 1.0)
    diff = pt - pc
    se = math.sqrt(pt * (1 - pt) / n_treatment + pc * (1 - pc) / n_control)
    return Difference(diff, diff - z * se, diff + z * se, z_test(s_treatment, n_treatment, s_control, n_control))
