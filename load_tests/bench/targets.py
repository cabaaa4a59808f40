"""The targets table: one row per target, each from the one part of the bench that measures it, with a verdict.

Latency targets come from serving.py's open-loop client (latency from the scheduled send time); no Locust figure
is used here. A part that has no figures leaves its rows "not run (why)", never filled from elsewhere.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from load_tests.bench.experiment_overhead import CLICK_EVERY
from load_tests.bench.figures import ExperimentOverhead, Load, Report

REPLAY_MIN_EVENTS_PER_S = 50_000
REPLAY_MIN_VS_PUSH = 5.0
FRESHNESS_MAX_P99_MS = 500.0
P99_AT_300_MAX_MS = {"/v1/recommendations": 10.0, "/v1/substitutions": 15.0, "/v1/next-best-action": 15.0}
SATURATION_MIN_RPS = 1_500
FEATURES_MIN_VS_FEAST = 10.0
RETRAIN_BUDGET_S = 120.0
CLOSED_LOOP_MAX_RATIO = 1.10

STREAMING = "load_tests/bench/streaming.py"
SERVING = "load_tests/bench/serving.py"
TRAINING = "load_tests/bench/training.py"
DEPLOYED = "load_tests/bench/deployed.py"
# as deployed (the live flow beside, events at 500/s): answer -> p99 at 300 req/s, ms
DEPLOYED_P99_MAX_MS = {"recommendations": 10.0, "substitutions, 3 items": 15.0, "substitutions, 10 items": 30.0,
                       "next-best-action": 15.0}
EXPERIMENT_OVERHEAD = "load_tests/bench/experiment_overhead.py"
SUSTAINED = "load_tests/bench/sustained.py"
SUSTAINED_RATE = 10_000
SUSTAINED_S = 600.0


@dataclass
class Target:
    name: str
    goal: str
    measured: str
    met: bool | None  # None: not measured (`measured` says why)
    measured_by: str


def fmt(value: float | int | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    whole = isinstance(value, int) or abs(value) >= 100
    text = f"{value:,.0f}" if whole else f"{value:,.2f}".rstrip("0").rstrip(".")
    return f"{text} {unit}".strip()


def verdict(target: Target) -> str:
    if target.met is None:
        return "not measured"
    if target.goal == "reported":  # no goal to meet: the figure is the point
        return "reported"
    return "met" if target.met else "**missed**"


def _compare(name: str, goal: str, by: str, value: float | None, ok: Callable[[float], bool], unit: str,
             why_missing: str) -> Target:
    if value is None:
        return Target(name, goal, why_missing, None, by)
    return Target(name, goal, fmt(value, unit), ok(value), by)


def _latency(name: str, goal_ms: float, load: Load, by: str) -> Target:
    goal = f"≤ {goal_ms:g} ms"
    if load.errors:
        return Target(name, goal, f"p99 {fmt(load.p99_ms, 'ms')}, {load.errors:,} errors of {load.requests:,}",
                      False, by)
    return _compare(name, goal, by, load.p99_ms, lambda v: v <= goal_ms, "ms", "no answer measured")


def streaming_targets(report: Report) -> list[Target]:
    why = report.not_run.get("streaming", "not run")
    s = report.streaming
    by_replay = f"`pantry stream replay --processes 2`, full year ({STREAMING})"
    by_push = f"that replay vs `FeatureStore.push` of store_product rows ({STREAMING})"
    rows = [
        _compare("replay throughput", f"≥ {REPLAY_MIN_EVENTS_PER_S:,} events/s", by_replay,
                 s.replay_full.events_per_s if s else None, lambda v: v >= REPLAY_MIN_EVENTS_PER_S, "events/s", why),
        Target("replay vs Feast `FeatureStore.push`", f"≥ {REPLAY_MIN_VS_PUSH:g}x",
               f"{s.replay_vs_push:.2f}x ({fmt(s.replay_full.events_per_s)} events/s vs "
               f"{fmt(s.push.rows_per_s)} rows/s)" if s else why,
               s.replay_vs_push >= REPLAY_MIN_VS_PUSH if s else None, by_push),
    ]
    for rate in (1_000, 5_000):
        name = f"freshness p99 at {rate:,} events/s (event posted -> feature readable)"
        run = next((f for f in s.freshness if f.rate_per_s == rate), None) if s else None
        by = f"`pantry stream live` fed by XADD, probe purchases polled in Redis ({STREAMING})"
        goal = f"≤ {FRESHNESS_MAX_P99_MS:g} ms"
        if run is None:
            rows.append(Target(name, goal, why if s is None else "not run (no run at this rate)", None, by))
        elif run.missing_probes or run.p99_ms is None:
            # a probe never readable a second after the last send is later than the goal: the p99 of the seen
            # probes alone would flatter the flow
            rows.append(Target(name, goal, f"p99 {fmt(run.p99_ms, 'ms')} of the seen probes; "
                               f"{run.missing_probes:,} of {run.probes + run.missing_probes:,} never readable",
                               False, by))
        else:
            rows.append(_compare(name, goal, by, run.p99_ms, lambda v: v <= FRESHNESS_MAX_P99_MS, "ms", why))
    return rows


def sustained_target(report: Report) -> Target:
    """Issue 21: the live flow holds 10,000 events/s for 10 minutes, p99 <= 500 ms in every minute (RSS flat).
    A shorter run that held is not the target (not measured); one that did not hold misses it at any length."""
    name = f"live flow: {SUSTAINED_RATE:,} events/s for {SUSTAINED_S / 60:g} minutes, p99 ≤ 500 ms every minute"
    goal = "held (every minute p99 ≤ 500 ms, RSS flat)"
    f = report.sustained
    if f is None:
        return Target(name, goal, report.not_run.get("sustained", "not run"), None, f"open loop ({SUSTAINED})")
    runs = [r for r in f.runs if r.rate_per_s >= SUSTAINED_RATE]
    best = max(f.highest_held_per_s.values(), default=None, key=lambda v: v or 0)
    highest = f"; highest rate held: {fmt(best, 'events/s') if best else 'none'}" if f.highest_held_per_s else ""
    if not runs:
        return Target(name, goal, f"not run at {SUSTAINED_RATE:,}/s{highest}", None, f"open loop ({SUSTAINED})")
    run = max(runs, key=lambda r: (r.seconds, r.held))  # the longest run: a shorter one that held hides no miss
    worst = max((m.p99_ms for m in run.minutes if m.p99_ms is not None), default=None)
    lapse = f", event time {run.time_scale:,.0f}x wall time" if run.time_scale != 1 else ""
    by = f"`pantry stream live --processes {run.processes}` fed by XADD, open loop{lapse} ({SUSTAINED})"
    measured = f"{run.seconds / 60:.1f} min at {run.rate_per_s:,}/s: {run.verdict} (worst p99 {fmt(worst, 'ms')})" \
               f"{highest}"
    if not run.held:
        return Target(name, goal, measured, False, by)
    if run.seconds < SUSTAINED_S:
        return Target(name, goal, f"not measured for 10 minutes ({measured}; PANTRY_BENCH_SUSTAINED_S=600)", None, by)
    return Target(name, goal, measured, True, by)


def serving_targets(report: Report) -> list[Target]:
    why = report.not_run.get("serving", "not run")
    s = report.serving
    rows = []
    for endpoint, goal_ms in P99_AT_300_MAX_MS.items():
        name = f"{endpoint} p99 @300 req/s"
        load = s.endpoints.get(endpoint) if s else None
        by = (f"open loop, {s.rate_rps:g} req/s for {s.step_s:g} s, latency from the scheduled send time ({SERVING})"
              if s else f"open loop ({SERVING})")
        if s and s.rate_rps != 300:
            rows.append(Target(name, f"≤ {goal_ms:g} ms", f"not run (measured at {s.rate_rps:g} req/s)", None, by))
        elif load is None:
            rows.append(Target(name, f"≤ {goal_ms:g} ms", why if s is None else "not run (endpoint not measured)",
                               None, by))
        else:
            rows.append(_latency(name, goal_ms, load.at_rate, by))
    by = f"closed loop, {s.connections} connections for {s.step_s:g} s ({SERVING})" if s else f"closed loop ({SERVING})"
    recs = s.endpoints.get("/v1/recommendations") if s else None
    goal = f"≥ {SATURATION_MIN_RPS:,} req/s"
    if recs and recs.saturation.errors:
        rows.append(Target("/v1/recommendations saturation", goal, f"{fmt(recs.saturation.achieved_rps, 'req/s')}, "
                           f"{recs.saturation.errors:,} errors", False, by))
    else:
        rows.append(_compare("/v1/recommendations saturation", goal, by, recs.saturation.achieved_rps if recs else None,
                             lambda v: v >= SATURATION_MIN_RPS, "req/s", why))
    rows += [features_vs_feast(report, path, why, by) for path in FEAST_ROUTES]
    rows.append(experiment_overhead(report, why))
    return rows


def experiment_overhead(report: Report, why: str) -> Target:
    """Issue 17: with an experiment running and outcomes streaming, the recommendations p99 at 300 req/s stays
    within 10% of the figure without, both measured in this run (alternating rounds, median of each side's p99s)."""
    name = "/v1/recommendations p99 @300 req/s: experiment running + outcomes streaming vs without"
    goal = f"≤ {CLOSED_LOOP_MAX_RATIO:g}x"
    s = report.serving
    c = s.experiment_overhead if s else None
    round_s = (c.round_s or s.step_s) if c else 0.0
    by = (f"open loop, {len(c.rounds_with)} + {len(c.rounds_without)} alternating rounds of {round_s:g} s, median "
          f"p99, live flow running, "
          f"~{round(c.outcomes_posted / max(1, len(c.rounds_with)) / round_s, -1):,.0f} outcome events/s "
          f"(an impression per {c.impression_per} shown, a click per {CLICK_EVERY} answers; {EXPERIMENT_OVERHEAD})"
          if c else f"open loop ({EXPERIMENT_OVERHEAD})")
    if c is None:
        return Target(name, goal, (s.experiment_overhead_note or "not run") if s else why, None, by)
    with_p99, without_p99 = ExperimentOverhead.p99(c.rounds_with), ExperimentOverhead.p99(c.rounds_without)
    errors = sum(r.errors for r in c.rounds_with + c.rounds_without) + c.outcome_errors
    if with_p99 is None or without_p99 is None:
        return Target(name, goal, "no answer measured", False, by)
    ratio = with_p99 / without_p99
    measured = f"{ratio:.2f}x ({fmt(with_p99, 'ms')} vs {fmt(without_p99, 'ms')})"
    if errors:
        measured += f", {errors:,} errors"
    return Target(name, goal, measured, ratio <= CLOSED_LOOP_MAX_RATIO and not errors, by)


FEAST_ROUTES = ("/v1/features", "/get-online-features")  # pantry's own route, and the drop-in for Feast's SDK


def features_vs_feast(report: Report, path: str, why: str, by: str) -> Target:
    """>= 10x feast serve's throughput at saturation, at a lower p99, with no failures of our own (the peer's
    failures are shown: they only lower its throughput), for one of pantry's routes of the same request."""
    name = f"{path} vs `feast serve` (saturation req/s, at a lower p99)"
    goal = f"≥ {FEATURES_MIN_VS_FEAST:g}x"
    by = f"same requests, same Redis; {by}"
    s = report.serving
    ours = s.endpoints.get(path) if s else None
    if s is None:
        return Target(name, goal, why, None, by)
    if ours is None or s.feast_serve is None or not s.feast_serve.achieved_rps:
        reason = "; ".join(s.peer_notes) or "a side was not measured"
        return Target(name, goal, f"not run ({reason})", None, by)
    pantry, feast = ours.saturation, s.feast_serve
    x = pantry.achieved_rps / feast.achieved_rps
    lower_p99 = pantry.p99_ms is not None and feast.p99_ms is not None and pantry.p99_ms < feast.p99_ms
    measured = f"{x:.1f}x ({fmt(pantry.achieved_rps)} vs {fmt(feast.achieved_rps)} req/s), " \
               f"p99 {fmt(pantry.p99_ms, 'ms')} vs {fmt(feast.p99_ms, 'ms')}"
    if pantry.errors:
        measured += f", {pantry.errors:,} pantry errors"
    if feast.errors:
        measured += f", {feast.errors:,} feast serve errors"
    return Target(name, goal, measured, x >= FEATURES_MIN_VS_FEAST and lower_p99 and not pantry.errors, by)


def training_targets(report: Report) -> list[Target]:
    why = report.not_run.get("training", "not run")
    t = report.training
    rows = [_compare("retrain time (full data: three models, ONNX export, parity checks, registry)",
                     f"reported (budget {RETRAIN_BUDGET_S:g} s)", f"`training.pipeline.train` in a scratch dir "
                     f"({TRAINING})", t.retrain_total_s if t else None, lambda v: v <= RETRAIN_BUDGET_S, "s", why)]
    by = f"{t.onnx_topk.calls if t else '-'} customers, one call each, 1 BLAS thread ({TRAINING})"
    rows.append(Target("ALS top-10: ONNX vs implicit's native recommend (p50 per call)", "reported",
                       f"{fmt(t.onnx_topk.p50_ms, 'ms')} vs {fmt(t.implicit_recommend.p50_ms, 'ms')}" if t else why,
                       True if t else None, by))
    for_you = next((r for r in t.served if r.surface == "for_you"), None) if t else None
    rows.append(Target("served recommend(), for_you: a customer's first call vs cached (p50 per call)", "reported",
                       f"{fmt(for_you.first_call.p50_ms, 'ms')} vs {fmt(for_you.cached.p50_ms, 'ms')}"
                       if for_you else why, True if for_you else None,
                       f"the retrained recommender in process ({TRAINING})"))
    return rows


def deployed_targets(report: Report) -> list[Target]:
    why = report.not_run.get("deployed", "not run")
    d = report.deployed
    beside = f"events at {d.events.rate_per_s:g}/s beside" if d else "events beside"
    by = (f"`pantry serve` with its live flow, {beside}; open loop, {d.rate_rps:g} req/s for {d.step_s:g} s "
          f"({DEPLOYED})" if d else f"`pantry serve` with its live flow ({DEPLOYED})")
    rows = []
    for answer, goal_ms in DEPLOYED_P99_MAX_MS.items():
        name = f"as deployed: {answer} p99 @300 req/s"
        load = d.answers.get(answer) if d else None
        if load is None:
            rows.append(Target(name, f"≤ {goal_ms:g} ms", why if d is None else "not run", None, by))
        else:
            rows.append(_latency(name, goal_ms, load, by))
    sat = d.recommendations_saturation if d else None
    sat_by = f"closed loop, {d.connections} connections, {beside} ({DEPLOYED})" if d else f"closed loop ({DEPLOYED})"
    goal = f"≥ {SATURATION_MIN_RPS:,} req/s"
    if sat is not None and sat.errors:
        rows.append(Target("as deployed: recommendations saturation", goal,
                           f"{fmt(sat.achieved_rps, 'req/s')}, {sat.errors:,} errors", False, sat_by))
    else:
        rows.append(_compare("as deployed: recommendations saturation", goal, sat_by,
                             sat.achieved_rps if sat else None, lambda v: v >= SATURATION_MIN_RPS, "req/s", why))
    e = d.events if d else None
    name = "as deployed: freshness p99 (event posted -> feature readable)"
    fresh_goal = f"≤ {FRESHNESS_MAX_P99_MS:g} ms"
    fresh_by = (f"a probe purchase each 100 ms among the events posted to /v1/events, while the answers ran at "
                f"their rate ({DEPLOYED})")
    if e is None:
        rows.append(Target(name, fresh_goal, why, None, fresh_by))
    elif e.missing_probes or e.freshness_p99_ms is None or e.failed_posts:
        rows.append(Target(name, fresh_goal, f"p99 {fmt(e.freshness_p99_ms, 'ms')} of the seen probes; "
                           f"{e.missing_probes:,} probes never readable, {e.failed_posts:,} posts failed", False,
                           fresh_by))
    else:
        rows.append(_compare(name, fresh_goal, fresh_by, e.freshness_p99_ms, lambda v: v <= FRESHNESS_MAX_P99_MS,
                             "ms", why))
    return rows


def evaluate(report: Report) -> list[Target]:
    return [*streaming_targets(report), sustained_target(report), *serving_targets(report),
            *deployed_targets(report), *training_targets(report)]
