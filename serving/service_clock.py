"""The service clock as events see it: which `ts` POST /v1/events accepts now (pantry.clock.max_accepted_ts, the
same rule as the live flow's gate), shown by GET /v1/clock and /readyz."""

from __future__ import annotations

import time

from pantry.clock import from_epoch, max_accepted_ts, parse_watermark
from pantry.keys import WATERMARK
from pantry.schemas import ServiceClock
from serving.redis_guard import StoreUnavailable
from serving.services import Services


async def read_clock(svc: Services, last_known: bool = False) -> ServiceClock:
    """The clock now; event mode reads the watermark (one GET). Redis out of reach: StoreUnavailable, or with
    `last_known` the newest watermark this worker has read (it only moves forward, so that bound is never looser
    than the live one; the live flow's gate applies the current one anyway): an outage of the read path must not
    turn away events that the event write path can still store."""
    settings = svc.settings
    watermark = None
    if settings.clock == "event":
        try:
            watermark = parse_watermark(await svc.store.call(lambda: svc.redis.get(WATERMARK)))
        except StoreUnavailable:
            if not last_known:
                raise
            watermark = svc.last_watermark
        else:
            svc.last_watermark = watermark
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
