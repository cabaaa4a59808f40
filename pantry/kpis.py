"""Online KPIs: what every answer did, counted per day, model, version, experiment, arm and surface.

The live flow (streaming/outcomes.py) joins outcomes to decisions and keeps each KPI key's running totals in its
recovery state; every outcome shard writes its totals, absolute (HSET, so a replayed flush after a restart writes the
same values: nothing is counted twice), to its own hash:

    pantry:kpis:<shard>   field "day|model|version|experiment|arm|surface" -> msgpack Counts (array)

Readers (`GET /admin/kpis`, experiments, guardrails, the Prometheus gauges, the daily export) sum the shards' hashes
with `merge_shards`. Nothing here touches Redis: callers HGETALL (sync or async) and hand the replies over.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

import msgspec

from pantry.keys import KPI_COUNTERS, KPI_PREFIX  # KPI_PREFIX + outcome shard name

__all__ = ["KPI_COUNTERS", "KPI_HASHES", "KPI_PREFIX", "OUTCOME_SHARDS", "Counts", "KpiKey", "merge_shards"]
OUTCOME_SHARDS = tuple(f"o{i:02d}" for i in range(16))  # the flow's outcome shards (never changes: recovery state)
KPI_HASHES = tuple(KPI_PREFIX + shard for shard in OUTCOME_SHARDS)  # what a reader HGETALLs and merges
# latency histogram of the decisions, milliseconds: bucket i counts elapsed <= LATENCY_BOUNDS_MS[i], the last
# bucket everything above the last bound
LATENCY_BOUNDS_MS = (1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 50.0, 75.0, 100.0, 200.0, 500.0, 1000.0)


class KpiKey(msgspec.Struct, frozen=True, order=True):
    day: str  # the decision's event-time day, YYYY-MM-DD
    model: str  # recommender | substitutions | next_best_action
    version: str  # the version that answered
    experiment: str = ""  # the experiment that chose the version ("" outside experiments)
    arm: str = ""  # control | treatment ("" outside experiments)
    surface: str = ""  # for_you | buy_again | discover | substitutions | a next-best-action channel

    def field(self) -> str:
        return "|".join((self.day, self.model, self.version, self.experiment, self.arm, self.surface))

    @classmethod
    def parse(cls, field: str | bytes) -> KpiKey:
        text = field.decode() if isinstance(field, bytes) else field
        return cls(*text.split("|"))


def _latency_zero() -> list[int]:
    return [0] * (len(LATENCY_BOUNDS_MS) + 1)


class Counts(msgspec.Struct, array_like=True):
    """One key's totals. Outcomes count once per (decision, product) and kind, whatever number of events say so."""

    decisions: int = 0
    fallbacks: int = 0  # decisions answered with any fallback
    model_errors: int = 0  # decisions whose model raised (fallback model_error)
    impressions: int = 0  # (decision, product) pairs shown
    clicks: int = 0
    add_to_carts: int = 0  # attributed (by decision_id, or customer x product within the attribution window)
    purchases: int = 0  # attributed purchase lines
    converted: int = 0  # decisions with at least one attributed purchase
    revenue: float = 0.0  # attributed sales_value
    subs_accepted: int = 0
    subs_rejected: int = 0
    coupons_offered: int = 0  # coupon actions answered
    coupons_redeemed: int = 0  # attributed redemptions
    latency: list[int] = msgspec.field(default_factory=_latency_zero)

    def add(self, other: Counts) -> Counts:
        """In place: self += other; returns self."""
        for name in self.__struct_fields__:
            if name == "latency":
                self.latency = [a + b for a, b in zip(self.latency, other.latency, strict=True)]
            else:
                setattr(self, name, getattr(self, name) + getattr(other, name))
        return self

    def latency_quantile_ms(self, q: float) -> float | None:
        """The upper bound of the bucket holding quantile q (None without decisions; inf past the last bound)."""
        total = sum(self.latency)
        if total == 0:
            return None
        rank, seen = q * total, 0
        for i, n in enumerate(self.latency):
            seen += n
            if seen >= rank:
                return LATENCY_BOUNDS_MS[i] if i < len(LATENCY_BOUNDS_MS) else float("inf")
        return float("inf")


def latency_bucket(elapsed_ms: float) -> int:
    for i, bound in enumerate(LATENCY_BOUNDS_MS):
        if elapsed_ms <= bound:
            return i
    return len(LATENCY_BOUNDS_MS)


_counts_decoder = msgspec.msgpack.Decoder(Counts)
_encoder = msgspec.msgpack.Encoder()


def encode_counts(counts: Counts) -> bytes:
    return _encoder.encode(counts)


def decode_counts(raw: bytes) -> Counts:
    return _counts_decoder.decode(raw)


def merge_shards(hashes: Iterable[Mapping[bytes | str, bytes]],
                 experiments: Collection[str] | None = None) -> dict[KpiKey, Counts]:
    """The sum over shards of their HGETALL replies: {key: totals}; only the keys of `experiments` when given (the
    guardrail loop reads them every second: it skips decoding the rest, most of the fields)."""
    out: dict[KpiKey, Counts] = {}
    for raw in hashes:
        for field, value in raw.items():
            key = KpiKey.parse(field)
            if experiments is not None and key.experiment not in experiments:
                continue
            counts = decode_counts(value)
            if key in out:
                out[key].add(counts)
            else:
                out[key] = counts
    return out


def rollup(totals: Mapping[KpiKey, Counts], *, days: bool = False, surfaces: bool = True) -> dict[KpiKey, Counts]:
    """Totals summed over days (unless `days`) and over surfaces (unless `surfaces`): the groups people read."""
    out: dict[KpiKey, Counts] = {}
    for key, counts in totals.items():
        group = KpiKey(key.day if days else "", key.model, key.version, key.experiment, key.arm,
                       key.surface if surfaces else "")
        out.setdefault(group, Counts()).add(counts)
    return out


# ---- what readers show: rates from counts --------------------------------------------------------------------

RATE_NAMES = ("ctr", "add_to_cart_rate", "conversion_rate", "revenue_per_1000", "substitution_acceptance",
              "coupon_redemption_rate", "fallback_rate", "latency_p50_ms", "latency_p99_ms")
COUNT_NAMES = tuple(name for name in Counts.__struct_fields__ if name != "latency")


def _ratio(num: float, den: float, scale: float = 1.0) -> float | None:
    return scale * num / den if den else None  # a rate with nothing to divide by is unknown, not 0


def rates(c: Counts) -> dict[str, float | None]:
    """The KPI definitions (docs/OPERATIONS.md "Reading KPIs"); None where the denominator is 0."""
    p50, p99 = c.latency_quantile_ms(0.5), c.latency_quantile_ms(0.99)
    return {
        "ctr": _ratio(c.clicks, c.impressions),
        "add_to_cart_rate": _ratio(c.add_to_carts, c.impressions),
        "conversion_rate": _ratio(c.converted, c.decisions),
        "revenue_per_1000": _ratio(c.revenue, c.decisions, 1000.0),
        "substitution_acceptance": _ratio(c.subs_accepted, c.subs_accepted + c.subs_rejected),
        "coupon_redemption_rate": _ratio(c.coupons_redeemed, c.coupons_offered),
        "fallback_rate": _ratio(c.fallbacks, c.decisions),
        # JSON has no infinity: past the last bound reads as None too
        "latency_p50_ms": p50 if p50 is not None and p50 != float("inf") else None,
        "latency_p99_ms": p99 if p99 is not None and p99 != float("inf") else None,
    }


def row(key: KpiKey, counts: Counts) -> dict:
    """One flat row: key fields, counts (latency buckets as a list), rates."""
    return {**msgspec.structs.asdict(key), **msgspec.structs.asdict(counts), **rates(counts)}


def select(totals: Mapping[KpiKey, Counts], *, model: str | None = None, version: str | None = None,
           experiment: str | None = None, surface: str | None = None, day_from: str | None = None,
           day_to: str | None = None) -> dict[KpiKey, Counts]:
    """The keys matching every filter given (days inclusive, ISO strings compare in date order)."""
    return {k: c for k, c in totals.items()
            if (model is None or k.model == model) and (version is None or k.version == version)
            and (experiment is None or k.experiment == experiment) and (surface is None or k.surface == surface)
            and (day_from is None or k.day >= day_from) and (day_to is None or k.day <= day_to)}


_counters_decoder = msgspec.msgpack.Decoder(dict[str, int])


def encode_counters(counters: Mapping[str, int]) -> bytes:
    return _encoder.encode(dict(counters))


def merge_counters(raw: Mapping[bytes | str, bytes]) -> dict[str, int]:
    """The outcome shards' stream counters (HGETALL of KPI_COUNTERS) summed: joined, pending, unattributed, ..."""
    out: dict[str, int] = {}
    for value in raw.values():
        for name, n in _counters_decoder.decode(value).items():
            out[name] = out.get(name, 0) + n
    return out
