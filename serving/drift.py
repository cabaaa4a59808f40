"""The drift sampler of a serving worker: each decision's inputs and scores, binned against its version's reference
(pantry/drift.py), counted in the process and added to Redis every `drift_flush_s` (HINCRBY on one hash per model,
version and UTC day: every worker of every process adds to the same counts). The
`pantry_drift_psi{model,version,feature}` gauge is computed from those counts when /metrics is scraped.

The request path only bins and counts (dict increments, no I/O): a version's reference is loaded by the
background task, and decisions of a version whose reference is not loaded yet are not counted.
"""

from __future__ import annotations

import asyncio
import logging
import random
from bisect import bisect_right
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from redis.exceptions import RedisError

from pantry import drift, drift_report, keys
from pantry.settings import Settings

log = logging.getLogger("pantry.serving.drift")
DAY_S = 86_400


class _Compiled:
    """A reference made ready for the request path: the views to read, per feature its edges and field names."""

    __slots__ = ("bins", "fields", "views")

    def __init__(self, reference: drift.DriftReference):
        self.views = drift.MODEL_VIEWS[reference.model]
        # one flat list of counters per version: feature i's bin b is counter offset_i + b, its missing bin last_i
        self.bins: list[tuple[list[float], int, int]] = []
        self.fields: list[str] = []  # counter -> Redis hash field
        for f in reference.features:
            offset = len(self.fields)
            self.fields.extend(drift.field_of(f.name, b) for b in range(len(f.edges) + 2))
            self.bins.append((f.edges, offset, len(self.fields) - 1))


_NOT_LOADED = object()


class DriftSampler:
    def __init__(self, settings: Settings, redis: Any):
        self.settings, self.redis = settings, redis
        self.rate = settings.drift_sample_rate
        self.compiled: dict[tuple[str, str], Any] = {}  # (model, version) -> _Compiled | None (no reference)
        self.wanted: set[tuple[str, str]] = set()
        self.pending: dict[tuple[str, str], list[int]] = {}  # (model, version) -> counters (_Compiled.fields)
        self.errors = 0  # decisions that could not be binned

    # ---- the request path ----------------------------------------------------------------------------------------

    def record(self, model: str, version: str, features: Mapping[str, Mapping[str, Any] | None], now: datetime,
               items: Any) -> None:
        """Count one decision (called by serving/answers/pipeline.py record())."""
        if self.rate < 1.0 and random.random() >= self.rate:
            return
        key = (model, version)
        compiled = self.compiled.get(key, _NOT_LOADED)
        if compiled is _NOT_LOADED:
            self.wanted.add(key)  # the background task loads it
            return
        if compiled is None:
            return
        try:
            values = drift.feature_values(compiled.views, features, now.timestamp(), drift.answer_scores(items))
        except (TypeError, ValueError, AttributeError):  # a row of an unexpected shape: drift must not fail answers
            if not self.errors:
                log.exception("drift: a decision of %s %s could not be binned (logged once)", model, version)
            self.errors += 1
            return
        counts = self.pending.get(key)
        if counts is None:
            counts = self.pending[key] = [0] * len(compiled.fields)
        for (edges, offset, missing), value in zip(compiled.bins, values, strict=True):
            counts[missing if value is None else offset + bisect_right(edges, value)] += 1

    # ---- the background task -------------------------------------------------------------------------------------

    async def load(self, versions: Mapping[str, str | None]) -> None:
        """Load the references of the served versions and of any version a decision asked for."""
        todo = {(m, v) for m, v in versions.items() if v} | self.wanted
        self.wanted = set()
        for model, version in todo:
            if (model, version) in self.compiled or model not in drift.MODEL_VIEWS:
                continue
            reference = await asyncio.to_thread(drift_report.load_reference, self.settings.models_dir, model,
                                                version)
            self.compiled[(model, version)] = _Compiled(reference) if reference is not None else None

    async def flush(self) -> int:
        """Add the pending counts to Redis; on failure they stay pending (bounded: features x bins per version)."""
        pending, self.pending = self.pending, {}
        if not pending:
            return 0
        day = f"{datetime.now(UTC):%Y%m%d}"
        ttl = (self.settings.drift_window_days + 1) * DAY_S
        pipe = self.redis.pipeline(transaction=False)
        n = 0
        for (model, version), counts in pending.items():
            key = keys.drift_key(model, version, day)
            fields = self.compiled[(model, version)].fields
            for i, count in enumerate(counts):
                if count:
                    pipe.hincrby(key, fields[i], count)
                    n += 1
            pipe.expire(key, ttl)
        try:
            await pipe.execute()
        except Exception as exc:  # Redis away: keep the counts for the next flush
            log.warning("drift counts not flushed (%s); kept for the next try", exc)
            for key, counts in pending.items():
                mine = self.pending.get(key)
                self.pending[key] = counts if mine is None else [a + b for a, b in zip(mine, counts, strict=True)]
            return 0
        return n

    async def report(self, active: Mapping[str, str | None] | None = None) -> drift_report.DriftReport:
        planned = await asyncio.to_thread(drift_report.plan, self.settings, dict(active or {}))
        pipe = self.redis.pipeline(transaction=False)
        for *_rest, day_keys in planned:
            for key in day_keys:
                pipe.hgetall(key)
        flat = await pipe.execute() if planned else []
        hashes, i = [], 0
        for *_rest, day_keys in planned:
            hashes.append(flat[i : i + len(day_keys)])
            i += len(day_keys)
        return await asyncio.to_thread(drift_report.assemble, self.settings, planned, hashes)

    async def scrape_families(self, active: Mapping[str, str | None]) -> list:
        """pantry_drift_psi{model,version,feature} as of this scrape (read when /metrics is asked for, not recomputed
        by every worker on a timer: a report costs ~3 ms of the worker's CPU, experiments/gauge_cost.py)."""
        from prometheus_client.core import GaugeMetricFamily

        family = GaugeMetricFamily("pantry_drift_psi", "PSI of a served model's input feature or score, live decisions "
                                   "of the last drift_window_days against the version's training reference",
                                   labels=["model", "version", "feature"])
        try:
            report = await self.report(active)
        except (RedisError, OSError) as exc:  # Redis away: the scrape has no drift gauge, never a failed scrape
            log.warning("drift gauge not read: %s", exc)
            return []
        for m in report.models:
            for f in m.features:
                if f.psi is not None:
                    family.add_metric([m.model, m.version, f.feature], f.psi)
        return [family]

    async def run(self, versions) -> None:
        """Every drift_flush_s: load references, flush counts. Never dies. `versions`: a callable giving the versions
        this worker serves now."""
        if self.rate <= 0:
            return
        try:
            await self.load(versions())  # before the first decisions, not after the first sleep
        except Exception:
            log.exception("drift references")
        while True:
            await asyncio.sleep(self.settings.drift_flush_s)
            try:
                await self.load(versions())
                await self.flush()
            except Exception:
                log.exception("drift task")
