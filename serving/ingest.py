"""Event ingestion: validate a batch, then XADD it to the event stream in one transaction (all or nothing)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pantry.events import Event, InvalidEvent, encode_msgpack, from_builtins
from pantry.keys import EVENT_FIELD, EVENTS_STREAM
from serving import metrics
from serving.schemas import EventError
from serving.service_clock import read_clock
from serving.services import Services


class BatchRejected(ValueError):
    """Some events are invalid: none is accepted; `errors` names each one by index."""

    def __init__(self, total: int, errors: list[EventError]):
        super().__init__(f"{len(errors)} of {total} events are invalid; none accepted")
        self.errors = errors


class BatchTooLarge(ValueError):
    pass


async def ingest(svc: Services, events: Sequence[Any]) -> int:
    """Validate every event, then write them all in one MULTI/EXEC; returns how many were written. Raises
    BatchTooLarge, BatchRejected (nothing written), or StoreUnavailable (nothing written)."""
    limit = svc.settings.max_events_per_batch
    if len(events) > limit:
        raise BatchTooLarge(f"{len(events)} events in one batch; the limit is {limit}")
    encoded: list[bytes] = []
    errors: list[EventError] = []
    valid: list[tuple[int, Event]] = []
    for i, event in enumerate(events):
        try:
            valid.append((i, from_builtins(event)))
        except InvalidEvent as exc:
            errors.append(EventError(i, str(exc)))
    if valid:
        clock = await read_clock(svc)  # the same rule as the live flow's gate (pantry.clock.max_accepted_ts)
        for i, event in valid:
            if event.ts > clock.max_accepted_ts:
                errors.append(EventError(i, f"`ts` {event.ts.isoformat()} is after the latest time the service "
                                            f"accepts now, {clock.max_accepted_ts.isoformat()} ({clock.mode} clock "
                                            f"{clock.now.isoformat()} + {clock.skew_allowed_s:.0f}s skew; "
                                            "GET /v1/clock) - at `$.ts`"))
            else:
                encoded.append(encode_msgpack(event))
        errors.sort(key=lambda err: err.index)
    if errors:
        metrics.EVENTS_REJECTED.inc(len(errors))
        raise BatchRejected(len(events), errors)

    async def write() -> None:
        pipe = svc.redis.pipeline(transaction=True)
        for payload in encoded:
            pipe.xadd(EVENTS_STREAM, {EVENT_FIELD: payload})
        await pipe.execute()

    if encoded:
        await svc.store.call(write)
    metrics.EVENTS_ACCEPTED.inc(len(encoded))
    return len(encoded)
