"""SLO gates: read slo.toml, read Locust's CSV stats, say which endpoint met or missed its objective."""

from __future__ import annotations

import csv
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

DEFAULT_SLO_FILE = Path(__file__).with_name("slo.toml")
CONTRACT_PREFIX = "contract: "


class SloError(ValueError):
    """The SLO file cannot be used; the message says why."""


class Slo(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    p99_ms: dict[str, float] = msgspec.field(default_factory=dict)
    default_p99_ms: float | None = None
    max_failure_rate: float = 0.0


def load_slo(path: Path) -> Slo:
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise SloError(f"SLO file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SloError(f"SLO file {path} is not valid TOML: {exc}") from exc
    try:
        slo = msgspec.convert(raw, Slo)
    except msgspec.ValidationError as exc:
        raise SloError(f"SLO file {path}: {exc}") from exc
    bad = {k: v for k, v in slo.p99_ms.items() if not v > 0}
    if bad or not 0 <= slo.max_failure_rate <= 1:
        raise SloError(f"SLO file {path}: p99 budgets must be > 0 and max_failure_rate within 0..1")
    return slo


@dataclass
class EndpointResult:
    name: str
    requests: int
    failures: int
    rps: float
    p50_ms: float
    p99_ms: float
    budget_ms: float | None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class Verdict:
    endpoints: list[EndpointResult]
    total_requests: int
    total_failures: int
    contract_violations: int
    failure_messages: list[tuple[str, int]]  # (message, occurrences), most frequent first
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems and all(e.ok for e in self.endpoints)

    def table(self) -> str:
        head = (f"{'endpoint':<24} {'requests':>9} {'fail':>6} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
                f"{'SLO ms':>7}  verdict")
        lines = [head, "-" * len(head)]
        for e in self.endpoints:
            budget = f"{e.budget_ms:g}" if e.budget_ms is not None else "-"
            verdict = "ok" if e.ok else "MISSED: " + "; ".join(e.problems)
            lines.append(f"{e.name:<24} {e.requests:>9,} {e.failures:>6,} {e.rps:>8.1f} {e.p50_ms:>7.0f} "
                         f"{e.p99_ms:>7.0f} {budget:>7}  {verdict}")
        return "\n".join(lines)


class LocustEntry(msgspec.Struct):
    """One endpoint in Locust's final `--json-file` stats (response_times: rounded ms -> count)."""

    name: str
    method: str | None
    num_requests: int
    num_failures: int
    start_time: float
    last_request_timestamp: float | None
    response_times: dict[float, int]

    def percentile(self, q: float) -> float:
        """Locust's own rule (stats.calculate_response_time_percentile), so our figures match its report."""
        total = sum(self.response_times.values())
        if not total:
            return math.nan
        threshold = int(total * q)
        seen = 0
        for rt in sorted(self.response_times, reverse=True):
            seen += self.response_times[rt]
            if total - seen <= threshold:
                return rt
        return min(self.response_times)

    @property
    def rps(self) -> float:
        span = (self.last_request_timestamp or self.start_time) - self.start_time
        return self.num_requests / span if span > 0 else math.nan


_entries = msgspec.json.Decoder(list[LocustEntry])


def read_stats(csv_prefix: Path) -> list[LocustEntry]:
    path = Path(f"{csv_prefix}.json")
    if not path.exists():
        raise FileNotFoundError(f"Locust wrote no final stats at {path}")
    return _entries.decode(path.read_bytes())


def read_failures(csv_prefix: Path) -> list[tuple[str, int]]:
    path = Path(f"{csv_prefix}_failures.csv")
    if not path.exists():
        return []
    with path.open(newline="") as fh:
        rows = [(f"{r['Name']}: {r['Error']}", int(r["Occurrences"])) for r in csv.DictReader(fh)]
    return sorted(rows, key=lambda r: -r[1])


def evaluate(slo: Slo, csv_prefix: Path) -> Verdict:
    endpoints: list[EndpointResult] = []
    total_requests = total_failures = 0
    for entry in sorted(read_stats(csv_prefix), key=lambda e: e.name):
        total_requests += entry.num_requests
        total_failures += entry.num_failures
        budget = slo.p99_ms.get(entry.name, slo.default_p99_ms)
        result = EndpointResult(
            name=entry.name,
            requests=entry.num_requests,
            failures=entry.num_failures,
            rps=entry.rps,
            p50_ms=entry.percentile(0.5),
            p99_ms=entry.percentile(0.99),
            budget_ms=budget,
        )
        if budget is not None and result.requests and not result.p99_ms <= budget:
            result.problems.append(f"p99 {result.p99_ms:.0f} ms > {budget:g} ms")
        if result.requests and result.failures / result.requests > slo.max_failure_rate:
            result.problems.append(f"failure rate {result.failures / result.requests:.2%} > {slo.max_failure_rate:.2%}")
        endpoints.append(result)
    failures = read_failures(csv_prefix)
    violations = sum(n for msg, n in failures if CONTRACT_PREFIX in msg)
    problems: list[str] = []
    if total_requests == 0:
        problems.append("no requests were made (is the host right?)")
    elif total_failures / total_requests > slo.max_failure_rate:
        problems.append(f"failure rate {total_failures / total_requests:.2%} > {slo.max_failure_rate:.2%}")
    if violations:
        problems.append(f"{violations:,} contract violations")
    exercised = {e.name for e in endpoints if e.requests}
    unexercised = sorted(set(slo.p99_ms) - exercised)
    if unexercised and total_requests:
        print(f"note: no requests reached {', '.join(unexercised)} (too few users or too short a run?)")
    return Verdict(endpoints, total_requests, total_failures, violations, failures, problems)
