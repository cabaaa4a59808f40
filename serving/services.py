"""Everything a worker builds once at startup and its handlers share (held on app.state.services)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from litestar.di import NamedDependency
from litestar.params import SkipValidation

from pantry.featurestore import repo
from pantry.featurestore.layout import OnlineLayout
from pantry.featurestore.reader import OnlineReader, ReadResult, RowRead
from pantry.featurestore.repo import FeatureServices
from pantry.featurestore.roundtrip import ClusterRawPipeline, RawPipeline, RoundTrip
from pantry.keys import CAMPAIGN_APPROVALS
from pantry.settings import Settings
from serving import metrics, stream_lag
from serving.campaigns import CampaignBook, load_campaigns
from serving.catalogue import Catalogue, load_catalogue
from serving.decisions import DecisionLog
from serving.drift import DriftSampler
from serving.models import ModelHolder
from serving.popularity import PopularitySnapshot
from serving.redis_guard import CircuitBreaker, GuardedStore, StoreUnavailable

log = logging.getLogger("pantry.serving")
STOP_WAIT_S = 2.0  # how long a worker's shutdown waits for its background tasks, and for each Redis client to close


async def cancel_and_wait(tasks: list[asyncio.Task], wait_s: float, every_s: float = 0.05) -> set[asyncio.Task]:
    """Cancel `tasks` and wait up to `wait_s` for them to end, cancelling again every `every_s`; the tasks still
    running then. Once is not enough on Python 3.11: asyncio.wait_for, which redis-py puts around each socket write,
    returns the write's result and drops a cancellation that lands as the write completes (CPython gh-86296, fixed
    by 3.12's wait_for). The task then goes on to its next sleep as if never cancelled, and the event loop's own
    shutdown, which cancels once and waits without limit, hung for 300 s in CI."""
    pending = {t for t in tasks if not t.done()}
    deadline = time.monotonic() + wait_s
    while pending and (left := deadline - time.monotonic()) > 0:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=min(every_s, left))
    return pending


def serving_client(settings: Settings, socket_timeout_s: float | None = None):
    """The worker's one async Redis client (built at startup, shared by every request): hiredis parses replies
    (redis-py picks it up when installed), connections are pooled and reused, no client-side retries (the
    GuardedStore decides). socket_timeout counts per read from when the pipeline has been sent, so waiting behind
    other requests on a busy event loop is not a Redis timeout."""
    import redis.asyncio
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    kind = redis.asyncio.RedisCluster if settings.redis_cluster else redis.asyncio.Redis
    return kind.from_url(
        settings.effective_redis_url(),
        socket_timeout=socket_timeout_s or settings.redis_socket_timeout_s,
        socket_connect_timeout=settings.redis_connect_timeout_s,
        retry=Retry(NoBackoff(), 0),
        max_connections=512,  # ~ requests in flight per worker; a pool miss opens one more connection, kept
    )


def read_pipeline(settings: Settings) -> RoundTrip:
    """The worker's pool for feature reads and decision-log writes (one round trip each, hiredis-packed; on a
    Redis Cluster one round trip per node, concurrently)."""
    kind = ClusterRawPipeline if settings.redis_cluster else RawPipeline
    return kind(settings.effective_redis_url(), read_timeout_s=settings.redis_socket_timeout_s,
                connect_timeout_s=settings.redis_connect_timeout_s)


def load_registry(settings: Settings) -> tuple[OnlineLayout, FeatureServices] | None:
    """The Feast layout and feature services from the registry (None before `feast apply`)."""
    try:
        layout, services = repo.registry(settings)
    except Exception as exc:  # no registry yet, or unreadable: serve fallbacks and retry later
        log.warning("feast registry not readable (%s): online features unavailable for now", exc)
        return None
    if not layout.views:
        return None
    return layout, services


@dataclass
class Services:
    settings: Settings
    redis: Any
    pipeline: RoundTrip
    store: GuardedStore
    models: ModelHolder
    popularity: PopularitySnapshot
    decisions: DecisionLog
    campaigns: CampaignBook
    # the event write path (serving/ingest.py): its own client (timeout for a ~1 MiB batch), breaker and script
    events_redis: Any = None
    events_store: GuardedStore | None = None
    events_script: Any = None  # registered by serving/ingest.py on first use
    last_watermark: datetime | None = None  # the newest event clock read (serving/service_clock.py)
    stream_lag_s: float | None = None  # the live flow's lag, read once a second (serving/stream_lag.py)
    reader: OnlineReader | None = None
    feature_services: FeatureServices = field(default_factory=dict)
    tasks: list[asyncio.Task] = field(default_factory=list)
    drift: DriftSampler | None = None  # live inputs and scores per model version (serving/drift.py)
    feature_log: Any = None  # the offline log's writer for Feast pushes (serving/feast_server.py), made on first push
    traffic: Any = None  # the console's per-minute request counts (serving/console/traffic.py; set by serving/app.py)
    # dietary exclusions, brands and coupon products, for honouring preferences and stock (serving/catalogue.py)
    catalogue: Catalogue = field(default_factory=Catalogue)

    @classmethod
    async def start(cls, settings: Settings) -> Services:
        redis = serving_client(settings)
        models = ModelHolder(settings.models_dir, settings.recommender_cache)
        await asyncio.to_thread(models.load_now)
        metrics.set_model_versions(models.current.versions())
        popularity = await asyncio.to_thread(PopularitySnapshot.from_dataset, settings)
        campaigns = CampaignBook(await asyncio.to_thread(load_campaigns, settings))
        pipeline = read_pipeline(settings)
        decisions = DecisionLog(pipeline, settings.decisions_maxlen,
                                on_drop=lambda n, why: metrics.DECISIONS_DROPPED.labels(why).inc(n),
                                retention_s=settings.decisions_retention_s,
                                max_field_bytes=settings.decisions_max_field_bytes,
                                trim_every_s=settings.stream_trim_every_s)
        store = GuardedStore(slack_s=settings.redis_socket_timeout_s / 2, attempt_s=settings.redis_socket_timeout_s,
                             budget_s=settings.redis_request_budget_s or None)
        svc = cls(settings, redis, pipeline, store, models, popularity, decisions, campaigns)
        svc.catalogue = await asyncio.to_thread(load_catalogue, settings)
        svc.events_redis = serving_client(settings, settings.events_write_timeout_s)
        svc.events_store = GuardedStore(CircuitBreaker(), lag=store.lag, slack_s=settings.events_write_timeout_s / 2,
                                        retry_timeouts=True)  # idempotent (serving/ingest.py)
        await svc._load_registry()
        await svc.refresh_approvals()
        svc.drift = DriftSampler(settings, redis)
        svc.tasks = [
            asyncio.create_task(models.watch(), name="models-watch"),
            asyncio.create_task(models.watch_erased(redis, store), name="erased-watch"),
            asyncio.create_task(models.watch_experiments(redis, store, settings.experiments_poll_s,
                                                         metrics.set_experiments), name="experiments-watch"),
            asyncio.create_task(decisions.run(), name="decision-log"),
            asyncio.create_task(svc._poll(), name="poll"),
            asyncio.create_task(store.lag.run(), name="loop-lag"),
            asyncio.create_task(svc.drift.run(lambda: models.current.versions()), name="drift"),
            asyncio.create_task(store.watch(lambda: pipeline.run([(b"PING",)])), name="read-probe"),
            asyncio.create_task(svc.events_store.watch(svc.events_redis.ping), name="events-probe"),
            asyncio.create_task(stream_lag.watch(svc), name="stream-lag"),
        ]
        return svc

    async def stop(self) -> None:
        await self.decisions.drain(timeout_s=1.0)
        if self.drift is not None:
            await self.drift.flush()  # this worker's last counts
        pending = await cancel_and_wait(self.tasks, STOP_WAIT_S)
        if pending:
            log.warning("shutdown: tasks still running after %.0f s: %s", STOP_WAIT_S,
                        sorted(t.get_name() for t in pending))
        metrics.PENDING.flush()
        for name, client in (("redis", self.redis), ("events_redis", self.events_redis), ("pipeline", self.pipeline)):
            try:
                await asyncio.wait_for(client.aclose(), STOP_WAIT_S)
            except Exception as exc:  # TimeoutError or a broken connection: the process is ending anyway
                log.warning("shutdown: closing %s: %s: %s", name, type(exc).__name__, exc)

    async def _load_registry(self) -> None:
        loaded = await asyncio.to_thread(load_registry, self.settings)
        if loaded is not None:
            layout, self.feature_services = loaded
            self.reader = OnlineReader(layout, self.settings.clock)

    async def refresh_approvals(self) -> None:
        try:
            raw = await self.store.call(lambda: self.redis.hgetall(CAMPAIGN_APPROVALS))
        except StoreUnavailable:
            return  # keep the last known approvals
        self.campaigns.refresh(raw)

    async def _poll(self, interval_s: float = 1.0) -> None:
        """Metrics and approvals every second; the registry every few seconds until it exists; model-version gauges."""
        versions = self.models.current.versions()
        tick = 0
        while True:
            await asyncio.sleep(interval_s)
            tick += 1
            try:
                metrics.PENDING.flush()  # the request path's metric updates of the last second
                await self.refresh_approvals()
                if self.reader is None and tick % 5 == 0:
                    await self._load_registry()
                current = self.models.current.versions()
                if current != versions:
                    metrics.set_model_versions(current, versions)
                    versions = current
            except Exception:  # the poller must never die
                log.exception("poller")

    async def read(self, reads: Sequence[RowRead], as_of: datetime | None) -> ReadResult:
        """Online rows (one round trip), guarded; StoreUnavailable when Redis or the registry is not there."""
        reader = self.reader
        if reader is None:
            raise StoreUnavailable("feast registry not loaded")
        result = await self.store.call(lambda: reader.read(self.pipeline, reads, as_of))
        # one metric update per (view, status) and per view, not per row: a substitution read has ~60 rows
        counts: dict[tuple[str, str], int] = {}
        oldest: dict[str, float] = {}
        for r, row in zip(reads, result.rows, strict=True):
            counts[(r.view, row.status)] = counts.get((r.view, row.status), 0) + 1
            if row.age_s is not None and row.age_s > oldest.get(r.view, -1.0):
                oldest[r.view] = row.age_s
        for (view, status), n in counts.items():
            metrics.PENDING.inc(metrics.child(metrics.FEATURE_STATUS, view, status), n)
        for view, age in oldest.items():
            metrics.PENDING.observe(metrics.child(metrics.FEATURE_AGE, view), max(age, 0.0))
        return result


# How a handler asks for the worker's Services (provided in serving/app.py): `services: Injected`. Not validated:
# it is our own object, not input.
Injected = NamedDependency[SkipValidation[Services]]
