"""Prometheus metrics: latency per endpoint, fallbacks by reason, feature age per view, loaded model versions.

With several worker processes (`pantry serve`), PROMETHEUS_MULTIPROC_DIR is set before any worker starts, so
/metrics aggregates every worker's samples (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import functools
from bisect import bisect_left

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values

from pantry.scoring import MODEL_NAMES

_LATENCY_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
_AGE_BUCKETS = (1, 10, 60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400, 30 * 86400, 365 * 86400)

REQUEST_LATENCY = Histogram(
    "pantry_request_seconds", "Handler latency by endpoint and status", ["endpoint", "status"],
    buckets=_LATENCY_BUCKETS,
)
FALLBACKS = Counter("pantry_fallbacks_total", "Answers served from a fallback, by endpoint and reason",
                    ["endpoint", "reason"])
FEATURE_AGE = Histogram("pantry_feature_age_seconds", "Age of the oldest row of a view per request", ["view"],
                        buckets=_AGE_BUCKETS)
FEATURE_STATUS = Counter("pantry_feature_rows_total", "Online rows read, by view and status", ["view", "status"])
MODEL_VERSION = Gauge("pantry_model_info", "1 for the model version a worker serves", ["model", "version"],
                      multiprocess_mode="max")
DECISIONS_DROPPED = Counter("pantry_decisions_dropped_total", "Decision log entries not written", ["reason"])
EVENTS_ACCEPTED = Counter("pantry_events_accepted_total", "Events written to the stream")
EVENTS_REJECTED = Counter("pantry_events_rejected_total", "Events rejected by validation")
LIVE_HEARTBEAT_AGE = Gauge("pantry_live_heartbeat_age_seconds", "Age of the live dataflow's heartbeat (at the last "
                           "/readyz or /metrics)", multiprocess_mode="mostrecent")
LIVE_LAG = Gauge("pantry_live_lag_seconds", "Age of the oldest event the live dataflow has not processed (0: "
                 "caught up)", multiprocess_mode="mostrecent")
# online KPIs (serving/kpis.py), totals over days, refreshed by every worker's poller from the same Redis hashes
KPI = Gauge("pantry_kpi", "Online KPI (count or rate) per model, version, experiment arm and surface",
            ["model", "version", "experiment", "arm", "surface", "kpi"], multiprocess_mode="mostrecent")
GUARDRAIL_BREACHES = Counter("pantry_guardrail_breaches_total", "Experiments stopped by a guardrail",
                             ["model", "guardrail"])
EXPERIMENT_SHARE = Gauge("pantry_experiment_treatment_share", "The treatment share of the model's running experiment "
                         "(0: none running)", ["model"], multiprocess_mode="mostrecent")
EXPERIMENT_STAGE = Gauge("pantry_experiment_ramp_stage", "The ramp stage (0-based) of the model's running experiment",
                         ["model"], multiprocess_mode="mostrecent")
DRIFT_PSI = Gauge("pantry_drift_psi", "PSI of a served model's input feature or score, live decisions of the last "
                  "drift_window_days against the version's training reference (serving/drift.py)",
                  ["model", "version", "feature"], multiprocess_mode="mostrecent")
EVENTS_DUPLICATE_BATCHES = Counter("pantry_events_duplicate_batches_total",
                                   "Event batches posted again and not written twice")


@functools.cache
def child(metric: Histogram | Counter, *labels: str):
    """The labelled child of a metric, looked up once per label set (`labels()` locks and hashes every call);
    every label set used on a request path is small and bounded (routes, statuses, views, reasons)."""
    return metric.labels(*labels)


class Pending:
    """Counter increments and histogram observations of the request path, added up in the process and applied to
    prometheus_client once a second (the poller) and before /metrics renders.

    In multiprocess mode every `inc`/`observe` is a locked write to an mmapped file; a /v1/features request made 11
    of them (latency, and per view a row count and an age), ~10% of its CPU. Here a request adds to dicts; a flush
    makes one write per bucket and sum that changed. Uses the histogram child's bucket list (`_upper_bounds`,
    `_buckets`, `_sum`: prometheus_client's own fields, pinned in requirements.lock); a test checks that the
    exposition equals direct observe() calls."""

    def __init__(self):
        self.counts: dict = {}
        self.histograms: dict = {}  # child -> [sum, count per bucket...]

    def inc(self, counter_child, amount: float = 1.0) -> None:
        self.counts[counter_child] = self.counts.get(counter_child, 0.0) + amount

    def observe(self, histogram_child, value: float) -> None:
        acc = self.histograms.get(histogram_child)
        if acc is None:
            acc = self.histograms[histogram_child] = [0.0] + [0] * len(histogram_child._upper_bounds)
        acc[0] += value
        acc[1 + bisect_left(histogram_child._upper_bounds, value)] += 1

    def flush(self) -> None:
        counts, self.counts = self.counts, {}
        histograms, self.histograms = self.histograms, {}
        for counter_child, amount in counts.items():
            counter_child.inc(amount)
        for histogram_child, (total, *buckets) in histograms.items():
            histogram_child._sum.inc(total)
            for bucket, n in zip(histogram_child._buckets, buckets, strict=True):
                if n:
                    bucket.inc(n)


PENDING = Pending()


def set_model_versions(versions: dict[str, str | None], previous: dict[str, str | None] | None = None) -> None:
    for name, version in (previous or {}).items():
        if version is not None:
            MODEL_VERSION.labels(name, version).set(0)
    for name, version in versions.items():
        MODEL_VERSION.labels(name, version or "none").set(1)


def render() -> tuple[bytes, str]:
    PENDING.flush()
    if values.ValueClass is not values.MutexValue:  # the multiprocess mode prometheus_client chose at import
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


def set_experiments(running: dict) -> None:
    """The share and ramp stage of each model's running experiment (serving.models.Running by model)."""
    for name in MODEL_NAMES:
        r = running.get(name)
        EXPERIMENT_SHARE.labels(name).set(r.experiment.share if r else 0.0)
        EXPERIMENT_STAGE.labels(name).set(r.experiment.stage if r else 0)
