"""Liveness, readiness, Prometheus metrics."""

from __future__ import annotations

from litestar import Controller, Response, get
from litestar.openapi.datastructures import ResponseSpec

from serving import metrics
from serving.redis_guard import StoreUnavailable
from serving.schemas import Health, Readiness
from serving.service_clock import read_clock
from serving.services import Injected


class HealthController(Controller):
    tags = ("health",)

    @get("/healthz", summary="The process is up")
    async def healthz(self) -> Health:
        return Health("ok")

    @get("/readyz", summary="Redis reachable, feature registry and all models loaded",
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
        ready = redis_ok and models.complete and svc.reader is not None
        body = Readiness("ready" if ready else "not_ready", redis_ok, models.versions(), svc.reader is not None,
                         clock)
        return Response(body, status_code=200 if ready else 503)

    @get("/metrics", summary="Prometheus metrics", media_type="text/plain", include_in_schema=True)
    async def metrics(self) -> Response[bytes]:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)
