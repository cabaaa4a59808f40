"""The live flow's lag as every answer records it: the age of the oldest event of `pantry:events` the flow has not
processed (pantry.health), read once a second per worker so an answer pays an attribute read, not a round trip.

A row's age says when its entity last changed; it cannot say that events for that entity wait unprocessed. The
decision log therefore records `stream_lag_s` beside `feature_ages`: a row may miss the events of its last
`stream_lag_s` seconds. None: unknown (no heartbeat ever, or Redis did not answer).
"""

from __future__ import annotations

import asyncio
import logging

from pantry.health import live_flow_async
from serving.redis_guard import StoreUnavailable

log = logging.getLogger("pantry.serving.stream_lag")
EVERY_S = 1.0


async def read_once(svc) -> float | None:
    """The lag now (three Redis commands), or None when it cannot be known."""
    try:
        flow = await svc.store.call(lambda: live_flow_async(svc.redis, 0.0, partitions=svc.settings.stream_partitions))
    except StoreUnavailable:
        return None
    return flow.lag_s if flow.heartbeat_age_s is not None else None


async def watch(svc, every_s: float = EVERY_S) -> None:
    """Keep `svc.stream_lag_s` current (a task of Services)."""
    while True:
        try:
            svc.stream_lag_s = await read_once(svc)
        except Exception as exc:  # e.g. a Redis older than 6.2: unknown, never a dead task
            log.debug("stream lag unreadable: %s", exc)
            svc.stream_lag_s = None
        await asyncio.sleep(every_s)
