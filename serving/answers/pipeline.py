"""The decision pipeline the model endpoints share: read -> classify the fallback -> score (guarded) -> record.

Every answer goes through the same steps, so they behave the same where they should:
- one read of every online row the answer needs (customer views, the shopper's preferences and any others, e.g.
  stock), in one round trip; the preferences (serving/preferences.py) do not count for the fallback;
- `now` is the read's clock (as_of, else the stream watermark in event mode, else wall time), and the same rule
  without the watermark when Redis cannot be reached;
- the fallback is the first reason that applies: `store_unavailable` (Redis or the registry is not there),
  `cold_start` (no customer row at all), `features_stale` (every customer row older than its view's TTL),
  `model_unavailable` (no model loaded), `model_error` (the model raised: the answer's degraded form is served);
- every answer is recorded in the decision log, and a fallback counted per endpoint and reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from pantry.clock import resolve_now
from pantry.featurestore.reader import ReadResult, Row, RowRead
from pantry.schemas import Fallback
from serving import metrics, preferences
from serving.decisions import new_decision_id
from serving.preferences import NO_PREFERENCES, Preferences
from serving.redis_guard import StoreUnavailable
from serving.services import Services

log = logging.getLogger("pantry.serving.answers")
T = TypeVar("T")


class Decision:
    """One answer in the making: for whom, what was read, `now`, the fallback so far, and when it started."""

    __slots__ = ("ages", "customer_id", "endpoint", "fallback", "features", "now", "preferences", "request", "started",
                 "stream_lag_s")

    def __init__(self, endpoint: str, request: Any, customer_id: int, now: datetime,
                 features: dict[str, Mapping[str, Any] | None], ages: dict[str, float | None],
                 fallback: Fallback | None, started: float, preferences: Preferences = NO_PREFERENCES):
        self.endpoint, self.request, self.customer_id, self.now = endpoint, request, customer_id, now
        self.features, self.ages, self.fallback, self.started = features, ages, fallback, started
        self.preferences = preferences  # the shopper's (serving/preferences.py); none set: the defaults
        self.stream_lag_s: float | None = None  # the live flow's lag when the rows were read (serving/stream_lag.py)

    def fall_back(self, reason: Fallback) -> None:
        """Record a fallback reason unless an earlier one already applies (the first reason is the cause)."""
        if self.fallback is None:
            self.fallback = reason


def customer_fallback(rows: Sequence[Row]) -> Fallback | None:
    """cold_start when no customer view has a row at all; features_stale when every row there is too old."""
    statuses = [row.status for row in rows]
    if all(s == "missing" for s in statuses):
        return "cold_start"
    if not any(s == "present" for s in statuses):
        return "features_stale"
    return None


async def open_decision(svc: Services, endpoint: str, request: Any, customer_id: int, customer_views: Sequence[str],
                        as_of: datetime | None, other_reads: Sequence[RowRead] = ()) -> tuple[Decision, list[Row]]:
    """Read the customer's views, their preferences and `other_reads` in one round trip. Returns the decision and
    the rows of `other_reads` (empty when the store is unavailable)."""
    started = time.perf_counter()
    reads = [RowRead(view, (customer_id,)) for view in customer_views]
    prefs_read = preferences.read_request(customer_id) if preferences.available(svc) else []
    try:
        result: ReadResult = await svc.read([*reads, *other_reads, *prefs_read], as_of)
    except StoreUnavailable:
        now = resolve_now(svc.settings.clock, as_of, None)
        return Decision(endpoint, request, customer_id, now, dict.fromkeys(customer_views), {}, "store_unavailable",
                        started), []
    n = len(reads)
    customer_rows = result.rows[:n]
    features = {r.view: row.values for r, row in zip(reads, customer_rows, strict=True)}
    ages = {r.view: row.age_s for r, row in zip(reads, customer_rows, strict=True)}
    prefs = preferences.from_row(result.rows[-1].values) if prefs_read else NO_PREFERENCES
    decision = Decision(endpoint, request, customer_id, result.now, features, ages, customer_fallback(customer_rows),
                        started, prefs)
    decision.stream_lag_s = svc.stream_lag_s  # rows may miss the events of the flow's last lag_s seconds
    return decision, result.rows[n:n + len(other_reads)]


def guarded(decision: Decision, score: Callable[[], T], degraded: Callable[[], T], what: str) -> T:
    """The model's answer, or — when the model raises — the degraded answer with `model_error`: a model bug
    degrades an answer, never fails it."""
    try:
        return score()
    except Exception:
        log.exception("%s failed (%s)", what, decision.endpoint)
        decision.fall_back("model_error")
        return degraded()


def record(svc: Services, decision: Decision, model: str, model_version: str, items: Any, *, surface: str,
           experiment_id: str = "", arm: str = "") -> str:
    """Log the decision and count its fallback; returns the new decision id. `model` is the model's name, `surface`
    where the answer is shown (a recommendation surface, a channel, "substitutions"), `experiment_id` and `arm`
    ("control" | "treatment") the experiment that chose `model_version` for this customer, if any: the outcome
    join (streaming) counts every KPI under these."""
    decision_id = new_decision_id()
    elapsed_ms = (time.perf_counter() - decision.started) * 1000.0
    svc.decisions.record(decision_id=decision_id, endpoint=decision.endpoint, request=decision.request,
                         model=model, model_version=model_version, customer_id=decision.customer_id,
                         surface=surface, experiment_id=experiment_id, arm=arm, elapsed_ms=elapsed_ms,
                         feature_ages=decision.ages, fallback=decision.fallback, items=items, now=decision.now,
                         stream_lag_s=decision.stream_lag_s)
    if svc.drift is not None:  # the inputs and scores of this decision, for drift (serving/drift.py)
        svc.drift.record(model, model_version, decision.features, decision.now, items)
    if decision.fallback is not None:
        metrics.PENDING.inc(metrics.child(metrics.FALLBACKS, decision.endpoint, decision.fallback))
        if svc.traffic is not None:  # the console overview's fallback rate per minute (serving/console/traffic.py)
            svc.traffic.fallback(decision.endpoint)
    return decision_id
