"""Prometheus metrics: latency per endpoint, fallbacks by reason, feature age per view, loaded model versions, and
the live flow's stream counters.

Names follow Prometheus' conventions: base units (`_seconds`), `_total` on counters, `_info` for a 1-valued info
gauge. With several worker processes (`pantry serve`), PROMETHEUS_MULTIPROC_DIR is set before any worker starts, so
/metrics aggregates every worker's samples (prometheus_client's multiprocess mode). Gauges use the `live*` modes, so
a worker that has stopped or died no longer counts: its gauge files go at the next scrape once its pid is gone
(`_drop_dead_workers`; not at its own shutdown, which in one process need not be its end: tests start apps in
turn). The stream's counters and the online KPIs (`pantry_kpi`) are the live flow's, kept in Redis: they are read
at each scrape (`stream_families`, serving.kpis.scrape_families), not counted or polled per worker.
"""

from __future__ import annotations

import functools
import os
import re
from bisect import bisect_left

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values

from pantry.scoring import MODEL_NAMES

_LATENCY_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
_AGE_BUCKETS = (1, 10, 60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400, 30 * 86400, 365 * 86400)

REQUEST_LATENCY = Histogram(
    "pantry_request_duration_seconds", "Handler latency by endpoint and status", ["endpoint", "status"],
    buckets=_LATENCY_BUCKETS,
)
FALLBACKS = Counter("pantry_fallbacks_total", "Answers served from a fallback, by endpoint and reason",
                    ["endpoint", "reason"])
FEATURE_AGE = Histogram("pantry_feature_age_seconds", "Age of the oldest row of a view per request", ["view"],
                        buckets=_AGE_BUCKETS)
FEATURE_STATUS = Counter("pantry_feature_rows_total", "Online rows read, by view and status", ["view", "status"])
MODEL_VERSION = Gauge("pantry_model_info", "1 for the model version a worker serves", ["model", "version"],
                      multiprocess_mode="livemax")
DECISIONS_DROPPED = Counter("pantry_decisions_dropped_total", "Decision log entries not written", ["reason"])
EVENTS_ACCEPTED = Counter("pantry_events_accepted_total", "Events written to the stream")
EVENTS_REJECTED = Counter("pantry_events_rejected_total", "Events rejected by validation")
LIVE_HEARTBEAT_AGE = Gauge("pantry_live_heartbeat_age_seconds", "Age of the live dataflow's heartbeat (at the last "
                           "/readyz or /metrics)", multiprocess_mode="livemostrecent")
LIVE_LAG = Gauge("pantry_live_lag_seconds", "Age of the oldest event the live dataflow has not processed (0: "
                 "caught up)", multiprocess_mode="livemostrecent")
GUARDRAIL_BREACHES = Counter("pantry_guardrail_breaches_total", "Experiments stopped by a guardrail",
                             ["model", "guardrail"])
EXPERIMENT_SHARE = Gauge("pantry_experiment_treatment_share", "The treatment share of the model's running experiment "
                         "(0: none running)", ["model"], multiprocess_mode="livemostrecent")
EXPERIMENT_STAGE = Gauge("pantry_experiment_ramp_stage", "The ramp stage (0-based) of the model's running experiment",
                         ["model"], multiprocess_mode="livemostrecent")
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


def _multiprocess() -> bool:
    return values.ValueClass is not values.MutexValue  # the multiprocess mode prometheus_client chose at import


def render(extra: list | None = None) -> tuple[bytes, str]:
    """The exposition of every worker's metrics, plus `extra` metric families (read at this scrape)."""
    PENDING.flush()
    if _multiprocess():
        from prometheus_client import multiprocess

        _drop_dead_workers()
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        body = generate_latest()
    if extra:
        scraped = CollectorRegistry()
        scraped.register(_Families(extra))
        body += generate_latest(scraped)
    return body, CONTENT_TYPE_LATEST


_LIVE_FILE = re.compile(r"gauge_live\w+_(\d+)\.db")


def _drop_dead_workers() -> None:
    """The `live*` gauge files of workers whose pid is gone (stopped, killed, OOM) are removed, so their last values
    stop counting; their counters and histograms stay (what they counted did happen)."""
    from prometheus_client import multiprocess

    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return
    pids = {int(m.group(1)) for name in os.listdir(directory) if (m := _LIVE_FILE.fullmatch(name))}
    for pid in pids - {os.getpid()}:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, directory)
        except PermissionError:  # alive, another user's
            pass


class _Families:
    def __init__(self, families: list):
        self.families = families

    def collect(self):
        return self.families


# the live flow's counters (streaming/): events taken from the stream, by what became of them
STREAM_OUTCOMES = ("processed", "duplicate", "late", "invalid", "future", "forgotten")


def stream_families(counters: dict, dead_letters: int, stream_length: int, trimmed: float) -> list:
    """The stream's counters as metric families, from one read of the partitions' counters (field -> count, merged:
    pantry.partitions.merge_counters), the event streams' summed length and the dead-letter stream's."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    def count(field: str) -> float:
        raw = counters.get(field.encode(), counters.get(field, 0))
        return float(raw or 0)

    events = CounterMetricFamily("pantry_stream_events", "Entries the live flow took from the stream, by outcome "
                                 "(processed; duplicate: an event id seen before; late: behind the newest event by "
                                 "more than the lateness bound; invalid: out of bounds; future: past the service "
                                 "clock's skew; forgotten: an erasure marker). late, invalid and future go to the "
                                 "dead-letter stream", labels=["outcome"])
    for outcome in STREAM_OUTCOMES:
        events.add_metric([outcome], count(outcome))
    seen = sum(count(o) for o in STREAM_OUTCOMES)
    lag = GaugeMetricFamily("pantry_stream_lag_events", "Events in the stream the live flow has not taken yet",
                            value=max(0.0, stream_length + trimmed - seen))
    dead = GaugeMetricFamily("pantry_stream_dead_letters", "Entries in the dead-letter stream (kept for "
                             "dead_letter_retention_s)", value=float(dead_letters))
    return [events, lag, dead]


def set_experiments(running: dict) -> None:
    """The share and ramp stage of each model's running experiment (serving.models.Running by model)."""
    for name in MODEL_NAMES:
        r = running.get(name)
        EXPERIMENT_SHARE.labels(name).set(r.experiment.share if r else 0.0)
        EXPERIMENT_STAGE.labels(name).set(r.experiment.stage if r else 0)
