"""The service clock as events see it: which `ts` POST /v1/events accepts now (pantry.clock.max_accepted_ts, the
same rule as the live flow's gate), shown by GET /v1/clock and /readyz."""

from __future__ import annotations

import time

from pantry.clock import from_epoch, max_accepted_ts, parse_watermark
from pantry.keys import WATERMARK
from serving.schemas import ServiceClock
from serving.services import Services


async def read_clock(svc: Services) -> ServiceClock:
    """The clock now; event mode reads the watermark (one GET; StoreUnavailable if Redis cannot be reached)."""
    settings = svc.settings
    watermark = None
    if settings.clock == "event":
        watermark = parse_watermark(await svc.store.call(lambda: svc.redis.get(WATERMARK)))
    wall_s = time.time()
    watermark_s = watermark.timestamp() if watermark is not None else None
    limit = max_accepted_ts(settings.clock, wall_s, watermark_s, settings.event_skew_wall_s,
                            settings.event_skew_event_s)
    wall = from_epoch(wall_s)
    if settings.clock == "event" and watermark is not None:
        now, skew = watermark, settings.event_skew_event_s
    else:
        now, skew = wall, settings.event_skew_wall_s
    return ServiceClock(settings.clock, now, watermark, wall, skew, from_epoch(limit))
