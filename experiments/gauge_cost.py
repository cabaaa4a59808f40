"""What the Redis-derived gauges cost the worker that computes them (docs/DECISIONS.md "Gauges read at the scrape").

`pantry_kpi` sums every KPI field of the 16 outcome shards (serving/kpis.py); `pantry_drift_psi` reads the drift
counts of every reported version and compares them with each reference (serving/drift.py). Each answering worker
used to recompute them on a timer (every 5 s and 30 s), in its event loop or in a thread holding the GIL; they are
now computed when /metrics is scraped. On a built state this times each computation as a worker does it: CPU of
this process (parse, merge, compare) and wall time (adds Redis).

    make bench   # once: builds .pantry/bench
    PANTRY_DATA_DIR=.pantry/bench PANTRY_ARTIFACTS_DIR=.pantry/bench/artifacts \
        python -m experiments.gauge_cost [REPEATS]
"""

from __future__ import annotations

import asyncio
import sys
import time
from types import SimpleNamespace

import redis.asyncio as aioredis

from experiments.built_state import own_redis
from pantry.kpis import KPI_HASHES
from pantry.models import registry
from pantry.redis_server import sync_client
from pantry.scoring import MODEL_NAMES
from serving import kpis
from serving.drift import DriftSampler


class _Direct:
    """serving.redis_guard's `store.call` without the guard: the callable's result."""

    async def call(self, fn):
        return await fn()


async def measure(settings, repeats: int) -> None:
    client = aioredis.Redis(port=settings.embedded_redis_port, socket_timeout=60)
    services = SimpleNamespace(redis=client, store=_Direct())
    drift = DriftSampler(settings, client)
    active = {name: registry.active_version(settings.models_dir, name) for name in MODEL_NAMES}
    for _ in range(repeats):
        cpu, wall = time.process_time(), time.perf_counter()
        family = (await kpis.scrape_families(services))[0]
        kpi_cpu, kpi_wall = time.process_time() - cpu, time.perf_counter() - wall
        cpu, wall = time.process_time(), time.perf_counter()
        report = await drift.report(active)
        drift_cpu, drift_wall = time.process_time() - cpu, time.perf_counter() - wall
        print(f"pantry_kpi: CPU {kpi_cpu * 1000:.2f} ms, wall {kpi_wall * 1000:.2f} ms ({len(family.samples):,} "
              f"samples); pantry_drift_psi: CPU {drift_cpu * 1000:.2f} ms, wall {drift_wall * 1000:.2f} ms "
              f"({len(report.models)} versions)")
    await client.aclose()


def main(repeats: int) -> None:
    with own_redis() as settings:
        fields = sum(sync_client(settings, timeout_s=120.0).hlen(name) for name in KPI_HASHES)  # waits for the load
        print(f"{fields:,} KPI fields")
        asyncio.run(measure(settings, repeats))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
