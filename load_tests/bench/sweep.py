"""Locust latency vs load: one endpoint paced at rising request rates, then flat out (saturation).

Closed loop (each Locust user waits for its answer): informational, beside the targets, which serving.py measures
open loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from load_tests import runner
from load_tests.slo import read_failures, read_stats
from pantry.settings import Settings

BENCH_LOCUSTFILE = Path(__file__).with_name("bench_locustfile.py")
SATURATION_USERS = 64
FLAT_OUT = 1e6  # a target no server meets: every user sends its next request as soon as the last one is answered


@dataclass
class Point:
    target_rps: float | None  # None = saturation
    users: int
    achieved_rps: float | None  # None: Locust wrote no stats
    p50_ms: float | None
    p99_ms: float | None
    requests: int
    failures: int
    first_failure: str = ""


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else value


def users_for(rate: float) -> int:
    return max(8, min(SATURATION_USERS, math.ceil(rate / 10)))  # about 10 requests/s per simulated user


def measure(settings: Settings, base_url: str, user_class: str, rate: float | None, seconds: int,
            out_dir: Path) -> Point:
    users = SATURATION_USERS if rate is None else users_for(rate)
    run = runner.run_locust(settings, out_dir, progress=False, host=base_url, users=users,
                            rate=FLAT_OUT if rate is None else rate, duration_s=seconds, spawn_rate=users,
                            user_classes=(user_class,), locustfile=BENCH_LOCUSTFILE)
    try:
        entries = read_stats(run.csv_prefix)
    except FileNotFoundError:
        return Point(rate, users, None, None, None, 0, 0, f"locust wrote no stats (see {run.log})")
    requests = sum(e.num_requests for e in entries)
    failures = sum(e.num_failures for e in entries)
    main = max(entries, key=lambda e: e.num_requests) if entries else None
    failed = read_failures(run.csv_prefix)
    return Point(
        target_rps=rate,
        users=users,
        achieved_rps=_finite(main.rps) if main else None,
        p50_ms=_finite(main.percentile(0.5)) if main else None,
        p99_ms=_finite(main.percentile(0.99)) if main else None,
        requests=requests,
        failures=failures,
        first_failure=failed[0][0][:200] if failed else "",
    )


def sweep(settings: Settings, base_url: str, user_class: str, rates: list[float], seconds: int, out_dir: Path,
          saturate: bool = True) -> list[Point]:
    points = [measure(settings, base_url, user_class, r, seconds, out_dir / f"{user_class}-{r:g}") for r in rates]
    if saturate:
        points.append(measure(settings, base_url, user_class, None, seconds, out_dir / f"{user_class}-max"))
    return points
