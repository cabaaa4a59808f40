"""GET /v1/clock: the service clock events are judged against (how a producer stamps `ts` in event-clock mode)."""

from __future__ import annotations

from litestar import Controller, get

from pantry.schemas import ServiceClock
from serving.service_clock import read_clock
from serving.services import Injected


class ClockController(Controller):
    path = "/v1/clock"
    tags = ("events",)

    @get(summary="The service clock: mode, now, watermark, allowed skew, the latest ts an event may carry")
    async def clock(self, services: Injected) -> ServiceClock:
        return await read_clock(services)
