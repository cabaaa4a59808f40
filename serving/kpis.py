"""Online KPIs for readers: GET /admin/kpis and the `pantry_kpi` Prometheus gauges.

The live flow's outcome shards keep the totals (streaming/outcomes.py) in the 16 hashes of pantry.kpis.KPI_HASHES;
here they are read in one pipeline (HGETALL each), summed (pantry.kpis.merge_shards), filtered, rolled up and given
their rates. Nothing is cached: a read costs 17 HGETALLs of a few hundred fields at most (days x versions x surfaces).
"""

from __future__ import annotations

import logging

import msgspec

from pantry import kpis
from pantry.kpis import KPI_COUNTERS, KPI_HASHES, LATENCY_BOUNDS_MS, Counts, KpiKey
from serving.redis_guard import StoreUnavailable

log = logging.getLogger("pantry.serving.kpis")


class KpiRow(msgspec.Struct, kw_only=True):
    """One KPI group's counts and rates (a rate with a zero denominator is null)."""

    day: str | None  # null: summed over days (by_day=false)
    model: str
    version: str
    experiment: str
    arm: str
    surface: str
    decisions: int
    fallbacks: int
    model_errors: int
    impressions: int
    clicks: int
    add_to_carts: int
    purchases: int
    converted: int
    revenue: float
    subs_accepted: int
    subs_rejected: int
    coupons_offered: int
    coupons_redeemed: int
    latency: list[int]  # decisions per latency bucket (KpiReport.latency_bounds_ms; the last: above them)
    ctr: float | None
    add_to_cart_rate: float | None
    conversion_rate: float | None
    revenue_per_1000: float | None
    substitution_acceptance: float | None
    coupon_redemption_rate: float | None
    fallback_rate: float | None
    latency_p50_ms: float | None
    latency_p99_ms: float | None


class KpiReport(msgspec.Struct):
    rows: list[KpiRow]
    latency_bounds_ms: list[float]
    stream: dict[str, int]  # the outcome join's counters: joined, duplicate, pending, unattributed, unmatched, ...


async def read_totals(services) -> tuple[dict[KpiKey, Counts], dict[str, int]]:
    """Every shard's totals summed, and the join's counters (one guarded round trip)."""

    async def fetch():
        pipe = services.redis.pipeline(transaction=False)
        for key in KPI_HASHES:
            pipe.hgetall(key)
        pipe.hgetall(KPI_COUNTERS)
        return await pipe.execute()

    replies = await services.store.call(fetch)
    return kpis.merge_shards(replies[:-1]), kpis.merge_counters(replies[-1])


async def report(services, *, model: str | None = None, version: str | None = None, experiment: str | None = None,
                 surface: str | None = None, day_from: str | None = None, day_to: str | None = None,
                 by_day: bool = False) -> KpiReport:
    totals, counters = await read_totals(services)
    chosen = kpis.select(totals, model=model, version=version, experiment=experiment, surface=surface,
                         day_from=day_from, day_to=day_to)
    groups = kpis.rollup(chosen, days=by_day)
    rows = []
    for key in sorted(groups):
        row = kpis.row(key, groups[key])
        if not by_day:
            row["day"] = None
        rows.append(msgspec.convert(row, KpiRow))
    return KpiReport(rows, list(LATENCY_BOUNDS_MS), counters)


def gauge_family(totals: dict[KpiKey, Counts]):
    """pantry_kpi{model,version,experiment,arm,surface,kpi}: every count and known rate, totals over days."""
    from prometheus_client.core import GaugeMetricFamily

    family = GaugeMetricFamily("pantry_kpi", "Online KPI (count or rate) per model, version, experiment arm and "
                               "surface", labels=["model", "version", "experiment", "arm", "surface", "kpi"])
    for key, counts in kpis.rollup(totals).items():
        labels = [key.model, key.version, key.experiment, key.arm, key.surface]
        for name in kpis.COUNT_NAMES:
            family.add_metric([*labels, name], float(getattr(counts, name)))
        for name, value in kpis.rates(counts).items():
            if value is not None:
                family.add_metric([*labels, name], value)
    return family


async def scrape_families(services) -> list:
    """The KPI gauges as of this scrape: read when /metrics is asked for, in the worker that answers it, rather than
    polled by every worker (a merge of every field costs a few ms of an answering worker's event loop)."""
    try:
        totals, _ = await read_totals(services)
    except StoreUnavailable:
        return []
    return [gauge_family(totals)]
