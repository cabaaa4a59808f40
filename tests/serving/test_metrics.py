"""Prometheus metrics: the per-process batching gives the same exposition as direct calls, and /metrics of the real
server shows request latency per route, feature rows per view and status, and feature ages."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from serving.metrics import Pending


def _pair(registry: CollectorRegistry, prefix: str) -> tuple[Histogram, Counter]:
    hist = Histogram(f"{prefix}_seconds", "h", ["route"], buckets=(0.001, 0.01, 0.1, 1.0), registry=registry)
    count = Counter(f"{prefix}_rows", "c", ["view"], registry=registry)
    return hist, count


def test_pending_flush_equals_direct_calls():
    direct_reg, batched_reg = CollectorRegistry(), CollectorRegistry()
    # different names: in prometheus_client's multiprocess mode (set by another test module) values are stored by
    # metric name and labels, so same-named metrics of two registries would share them
    direct_h, direct_c = _pair(direct_reg, "direct")
    batched_h, batched_c = _pair(batched_reg, "batched")
    pending = Pending()
    rng = random.Random(3)
    # values on bucket bounds too: a value equal to a bound belongs to that bucket (le = less or equal)
    values = [rng.choice([0.001, 0.01, 0.1, 1.0, 5.0, 0.0]) if i % 3 == 0 else rng.expovariate(20) for i in range(500)]
    for i, v in enumerate(values):
        route, view = ("a", "b")[i % 2], ("v1", "v2", "v3")[i % 3]
        direct_h.labels(route).observe(v)
        direct_c.labels(view).inc(i % 4)
        pending.observe(batched_h.labels(route), v)
        pending.inc(batched_c.labels(view), i % 4)
        if i % 97 == 0:
            pending.flush()  # flushing at any point changes nothing
    assert _samples(batched_reg, "batched") != _samples(direct_reg, "direct")  # the tail is still pending
    pending.flush()
    batched, direct = _samples(batched_reg, "batched"), _samples(direct_reg, "direct")
    assert batched.keys() == direct.keys()
    for key, v in direct.items():
        assert batched[key] == pytest.approx(v, rel=1e-12), key  # sums: same values added in another order


def _samples(registry: CollectorRegistry, prefix: str) -> dict[tuple, float]:
    """Every sample but the `_created` timestamps (when each child was made: differs between the registries)."""
    return {(s.name.removeprefix(prefix), tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(generate_latest(registry).decode())
            for s in family.samples if not s.name.endswith("_created")}


def test_metrics_endpoint_after_requests(http, write_features):
    from datetime import UTC, datetime

    written = datetime(2017, 7, 1, 8, tzinfo=UTC)
    write_features("customer_activity", (9_200_000_030,), {"orders_7d": 1}, written)
    for _ in range(3):
        assert http.post("/v1/features", json={"features": ["customer_activity:orders_7d"],
                                               "entities": {"customer_id": [9_200_000_030, 9_200_000_031]}}
                         ).status_code == 200
    assert http.post("/v1/features", json={"features": ["nope:x"], "entities": {"customer_id": [1]}}).status_code == 400
    samples = {}
    for family in text_string_to_metric_families(http.get("/metrics").text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            samples[key] = samples.get(key, 0.0) + sample.value

    def total(name: str, **labels: str) -> float:
        return sum(v for (n, ls), v in samples.items() if n == name and labels.items() <= dict(ls).items())

    # flushed before /metrics renders: nothing waits for the next second
    assert total("pantry_request_duration_seconds_count", endpoint="/v1/features", status="200") >= 3
    assert total("pantry_request_duration_seconds_count", endpoint="/v1/features", status="400") >= 1
    assert total("pantry_feature_rows_total", view="customer_activity", status="missing") >= 3
    assert total("pantry_feature_rows_total", view="customer_activity") >= 6
    assert total("pantry_feature_age_seconds_count", view="customer_activity") >= 3


def test_metrics_carry_the_live_flows_stream_counters(http, redis_client):
    from pantry.keys import STREAM_COUNTERS

    saved = redis_client.hgetall(STREAM_COUNTERS)  # other tests' flows write this hash: put it back after
    redis_client.hset(STREAM_COUNTERS, mapping={"processed": 41, "duplicate": 2, "late": 1, "invalid": 3})
    try:
        families = {f.name: f for f in text_string_to_metric_families(http.get("/metrics").text)}
    finally:
        redis_client.delete(STREAM_COUNTERS)
        if saved:
            redis_client.hset(STREAM_COUNTERS, mapping=saved)
    events = {s.labels["outcome"]: s.value for s in families["pantry_stream_events"].samples
              if s.name == "pantry_stream_events_total"}
    assert events["processed"] == 41 and events["duplicate"] == 2 and events["late"] == 1 and events["invalid"] == 3
    assert families["pantry_stream_events"].type == "counter"
    assert "pantry_stream_lag_events" in families and "pantry_stream_dead_letters" in families


def test_the_grafana_dashboard_queries_only_metrics_pantry_exports():
    import json
    import re
    from pathlib import Path

    from prometheus_client.metrics import MetricWrapperBase

    from serving import metrics

    exported = {m._name for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)}
    exported |= {f.name for f in metrics.stream_families({}, 0, 0, 0.0)}
    dashboard = json.loads((Path(__file__).parents[2] / "docs" / "grafana" / "pantry-dashboard.json").read_text())
    queried = {name for panel in dashboard["panels"] for target in panel["targets"]
               for name in re.findall(r"\bpantry_[a-z0-9_]+", target["expr"])}
    assert len(queried) >= 10
    for name in queried:
        base = re.sub(r"_(bucket|count|sum|total)$", "", name)
        assert base in exported or name in exported, f"the dashboard queries {name}, which pantry does not export"
