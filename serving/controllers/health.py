"""Liveness, readiness, Prometheus metrics."""

from __future__ import annotations

from litestar import Controller, Response, get
from litestar.openapi.datastructures import ResponseSpec
from redis.exceptions import ResponseError

from pantry.health import Durability, LiveFlow, durability_async, live_flow_async
from pantry.keys import DEAD_LETTER_STREAM
from pantry.partitions import counters_key, events_stream, merge_counters
from pantry.schemas import Health, Readiness
from serving import kpis, metrics
from serving.redis_guard import StoreUnavailable
from serving.service_clock import read_clock
from serving.services import Injected, Services


async def _live_flow(svc: Services) -> LiveFlow | None:
    """The live dataflow's heartbeat and lag, its worst partition's (None: Redis did not answer); updates the two
    gauges."""
    settings = svc.settings
    max_age_s = settings.live_max_age_s
    try:
        flow = await svc.store.call(lambda: live_flow_async(svc.redis, max_age_s, settings.live_max_lag_s,
                                                            settings.stream_partitions))
    except StoreUnavailable:
        return None
    except ResponseError as exc:  # e.g. a Redis older than 6.2 (no exclusive XRANGE bound): say so, never a 500
        return LiveFlow(max_age_s <= 0, f"the live flow's heartbeat could not be read: {exc}", max_age_s=max_age_s)
    if flow.heartbeat_age_s is not None:
        metrics.LIVE_HEARTBEAT_AGE.set(flow.heartbeat_age_s)
        metrics.LIVE_LAG.set(flow.lag_s or 0.0)
        svc.stream_lag_s = flow.lag_s
    return flow


def _as_dict(reply) -> dict:
    """An HGETALL reply of the raw pipeline (a dict, or RESP2's flat [field, value, ...])."""
    return reply if isinstance(reply, dict) else dict(zip(reply[::2], reply[1::2], strict=True))


async def _stream_families(svc: Services) -> list:
    """The live flow's stream counters, read at this scrape in one round trip (none when Redis does not answer):
    every partition's counters and stream length, summed."""
    n = svc.settings.stream_partitions
    commands = [*((b"HGETALL", counters_key(p)) for p in range(n)), (b"XLEN", DEAD_LETTER_STREAM),
                *((b"XLEN", events_stream(p)) for p in range(n))]
    try:
        replies = await svc.store.call(lambda: svc.pipeline.run(commands))
    except StoreUnavailable:
        return []
    counters = merge_counters(_as_dict(reply) for reply in replies[:n])
    dead, length = int(replies[n]), sum(int(reply) for reply in replies[n + 1:])
    return metrics.stream_families(counters, dead, length, counters.get("trimmed", 0.0))


async def _durability(svc: Services) -> Durability | None:
    try:
        return await svc.store.call(lambda: durability_async(svc.redis))
    except StoreUnavailable:
        return None


class HealthController(Controller):
    tags = ("health",)

    @get("/healthz", summary="The process is up")
    async def healthz(self) -> Health:
        return Health("ok")

    @get("/readyz", summary="Redis reachable, feature registry and all models loaded, live dataflow heartbeat fresh",
         responses={503: ResponseSpec(Readiness, description="not ready: the body says what is missing")})
    async def readyz(self, services: Injected) -> Response[Readiness]:
        svc = services
        clock = None
        try:
            await svc.store.call(svc.redis.ping)
            redis_ok = True
            clock = await read_clock(svc)
        except StoreUnavailable:
            redis_ok = clock is not None
        models = svc.models.current
        flow = await _live_flow(svc) if redis_ok else None
        reasons = []
        if not redis_ok:
            reasons.append("redis does not answer")
        if not models.complete:
            reasons.append("models not loaded: " + ", ".join(n for n, v in models.versions().items() if v is None))
        if svc.reader is None:
            reasons.append("feast registry not loaded (run `pantry feast apply`)")
        if flow is not None and not flow.ok:
            reasons.append(flow.detail)
        elif flow is None and redis_ok and svc.settings.live_max_age_s > 0:  # judged, and unknown: not ready
            reasons.append("the live flow's heartbeat could not be read (Redis did not answer in time)")
        ready = not reasons
        body = Readiness("ready" if ready else "not_ready", redis_ok, models.versions(), svc.reader is not None,
                         live_flow=flow, durability=await _durability(svc) if redis_ok else None, reasons=reasons,
                         clock=clock)
        return Response(body, status_code=200 if ready else 503)

    @get("/metrics", summary="Prometheus metrics", media_type="text/plain", include_in_schema=True)
    async def metrics(self, services: Injected) -> Response[bytes]:
        await _live_flow(services)  # the live flow's gauges as of this scrape
        # gauges derived from Redis are computed here, for the scrape, not on a timer in every answering worker
        families = [*await _stream_families(services), *await kpis.scrape_families(services)]
        if services.drift is not None:
            families += await services.drift.scrape_families(services.models.current.versions())
        body, content_type = metrics.render(families)
        return Response(body, media_type=content_type)
