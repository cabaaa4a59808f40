"""/admin/drift (ml_engineer): PSI per input feature and score of every served model version (serving/drift.py)."""

from __future__ import annotations

import redis
from litestar import Controller, get

from pantry.drift_report import DriftReport
from serving.redis_guard import StoreUnavailable
from serving.services import Injected


class AdminDriftController(Controller):
    path = "/admin/drift"
    tags = ("admin",)

    @get(summary="Drift of each served model: PSI of its live inputs and scores against the training reference")
    async def drift(self, services: Injected) -> DriftReport:
        sampler = services.drift
        if sampler is None:
            raise StoreUnavailable("drift sampler not started")
        await sampler.flush()  # this worker's counts of the last seconds count too
        try:  # not through the request's Redis budget (60 ms): an admin read of a few hashes may take longer
            return await sampler.report(services.models.current.versions())
        except (OSError, redis.RedisError) as exc:  # Redis errors surface as the service's 503, not a 500
            raise StoreUnavailable(f"drift counts not readable: {exc}") from exc
