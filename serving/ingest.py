"""Event ingestion: validate a batch, then write it to the event stream exactly once (all or nothing).

The write is one Lua call (atomic on the server): if the batch's marker key exists (the sha256 of its encoded
events, expiring after `events_dedup_window_s`) nothing is written and the call says "replay"; else every event is
XADDed and the marker is set. A batch posted again (a client retrying after a lost 202, or our own retry after a
timeout whose write did commit) never makes a second set of stream entries. The marker lives in the slot of
`pantry:events` (hash tag), so this works on a Redis Cluster. The marker holds the nonce of the request that
wrote the batch: our own retry of a committed write is not reported as a duplicate, another request's is.

Writes go through their own client (timeout sized for a ~1 MiB batch) and their own GuardedStore: a failing write
path never opens the breaker of feature reads, and reads failing never refuse a write Redis would take.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Any

from pantry.events import Event, InvalidEvent, batch_from_builtins, encode_msgpack, from_builtins
from pantry.keys import EVENT_BATCH_PREFIX, EVENT_FIELD, EVENTS_STREAM
from pantry.schemas import EventError
from serving import metrics
from serving.redis_guard import StoreUnavailable
from serving.service_clock import read_clock
from serving.services import Services

# KEYS[1] marker, KEYS[2] stream; ARGV[1] marker expiry (s), ARGV[2] nonce, ARGV[3] field, ARGV[4] the events, each
# as a 4-byte big-endian length and the encoded event. One argument, not one per event: redis-py packs a command's
# arguments in Python, a third of a 300-event POST's CPU on the worker's event loop; Lua splits it on the server.
WRITE_BATCH = """
local seen = redis.call('GET', KEYS[1])
if seen then return {1, seen} end
local events, pos = ARGV[4], 1
while pos <= #events do
  local size, start = struct.unpack('>I4', events, pos)
  pos = start + size
  redis.call('XADD', KEYS[2], '*', ARGV[3], string.sub(events, start, pos - 1))
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[1])
return {0, ARGV[2]}
"""


class BatchRejected(ValueError):
    """Some events are invalid: none is accepted; `errors` names each one by index."""

    def __init__(self, total: int, errors: list[EventError]):
        super().__init__(f"{len(errors)} of {total} events are invalid; none accepted")
        self.errors = errors


class BatchTooLarge(ValueError):
    pass


def pack_events(encoded: Sequence[bytes]) -> bytes:
    """The batch as the script's one argument: each encoded event after its length (4 bytes, big-endian)."""
    return b"".join([len(payload).to_bytes(4, "big") + payload for payload in encoded])


def batch_key(packed: bytes) -> str:
    """The marker key of a batch: sha256 of its packed events (each length-prefixed, so no two batches collide by
    concatenation)."""
    return EVENT_BATCH_PREFIX + hashlib.sha256(packed).hexdigest()


def write_script(client: Any):
    """The registered Lua script on the worker's event-write client (EVALSHA, EVAL once after a Redis restart)."""
    return client.register_script(WRITE_BATCH)


async def event_errors(svc: Services, events: Sequence[Any]) -> list[EventError]:
    """Every bad event of a batch, by index, with the reason (the clock is read only if some event fits the schema)."""
    errors: list[EventError] = []
    valid: list[tuple[int, Event]] = []
    for i, raw in enumerate(events):
        try:
            valid.append((i, from_builtins(raw)))
        except InvalidEvent as exc:
            errors.append(EventError(i, str(exc)))
    if valid:
        clock = await read_clock(svc, last_known=True)
        for i, event in valid:
            if event.ts > clock.max_accepted_ts:
                errors.append(EventError(i, f"`ts` {event.ts.isoformat()} is after the latest time the service "
                                            f"accepts now, {clock.max_accepted_ts.isoformat()} ({clock.mode} clock "
                                            f"{clock.now.isoformat()} + {clock.skew_allowed_s:.0f}s skew; "
                                            "GET /v1/clock) - at `$.ts`"))
                continue
            try:
                encode_msgpack(event)
            except OverflowError as exc:  # an integer past 64 bits in a field with no bound: not msgpack
                errors.append(EventError(i, f"a number is out of range: {exc}"))
    errors.sort(key=lambda err: err.index)
    return errors


async def _encoded(svc: Services, events: Sequence[Any]) -> list[bytes] | None:
    """The batch encoded if every event is fine (the usual case: one conversion for the whole batch, a third of the
    CPU of going event by event), else None."""
    try:
        typed = batch_from_builtins(events)
    except InvalidEvent:
        return None
    # the same rule as the live flow's gate (pantry.clock.max_accepted_ts)
    clock = await read_clock(svc, last_known=True)
    if max(event.ts for event in typed) > clock.max_accepted_ts:
        return None
    try:
        return list(map(encode_msgpack, typed))
    except OverflowError:
        return None


async def ingest(svc: Services, events: Sequence[Any]) -> tuple[int, bool]:
    """Validate every event, then write them all once; returns (how many, whether this batch had already been
    written by another request). Raises BatchTooLarge, BatchRejected (nothing written), or StoreUnavailable
    (nothing written by this request; a retry of the same batch is safe)."""
    limit = svc.settings.max_events_per_batch
    if len(events) > limit:
        raise BatchTooLarge(f"{len(events)} events in one batch; the limit is {limit}")
    if not svc.events_store.closed:  # Redis is out: refuse before spending CPU on validating (retries come back)
        raise StoreUnavailable("circuit open")
    if not events:
        return 0, False
    encoded = await _encoded(svc, events)
    if encoded is None:
        errors = await event_errors(svc, events)
        metrics.EVENTS_REJECTED.inc(len(errors))
        raise BatchRejected(len(events), errors)
    nonce = os.urandom(8).hex().encode()
    window = str(max(1, svc.settings.events_dedup_window_s))

    if svc.events_script is None:
        svc.events_script = write_script(svc.events_redis)

    packed = pack_events(encoded)
    keys = [batch_key(packed), EVENTS_STREAM]

    async def write() -> list[Any]:
        return await svc.events_script(keys=keys, args=[window, nonce, EVENT_FIELD, packed], client=svc.events_redis)

    replayed, writer = await svc.events_store.call(write)
    duplicate = bool(replayed) and writer != nonce
    if duplicate:
        metrics.EVENTS_DUPLICATE_BATCHES.inc()
    else:
        metrics.EVENTS_ACCEPTED.inc(len(encoded))
    return len(encoded), duplicate
