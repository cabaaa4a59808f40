"""Event ingestion: validate a batch, then write it to the event stream exactly once (all or nothing).

Each event goes to its partition's stream (pantry/partitions.py: its customer's, else its store's; one stream,
`pantry:events`, when Settings.stream_partitions is 1), in the batch's order. The write is one Lua call per partition
the batch touches (atomic on the server), the calls sent concurrently: if the partition's marker key exists (the
sha256 of the WHOLE batch's encoded events, expiring after `events_dedup_window_s`) nothing is written there and the
call says "replay"; else the partition's events are XADDed and its marker is set. A batch posted again (a client
retrying after a lost 202, or our own retry after a timeout whose write did commit) never makes a second set of
stream entries: each partition's marker says it holds its share already, and a retry after a partial failure writes
only the partitions that were not written. Each marker lives in the slot of its partition's stream (hash tag), so
this works on a Redis Cluster. A marker holds the nonce of the request that wrote it: our own retry of a committed
write is not reported as a duplicate; the batch is a duplicate when another request wrote every partition's share.

Writes go through their own client (timeout sized for a ~1 MiB batch) and their own GuardedStore: a failing write
path never opens the breaker of feature reads, and reads failing never refuse a write Redis would take.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Sequence
from typing import Any, NamedTuple

from pantry.events import Event, InvalidEvent, batch_from_builtins, encode_msgpack, from_builtins
from pantry.keys import EVENT_FIELD
from pantry.partitions import batch_marker_prefix, events_stream, partition_of
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


def batch_key(packed: bytes, partition: int = 0) -> str:
    """The marker key of a batch in a partition: sha256 of the whole batch's packed events (each length-prefixed, so
    no two batches collide by concatenation), the same digest in every partition."""
    return batch_marker_prefix(partition) + hashlib.sha256(packed).hexdigest()


class PartitionWrite(NamedTuple):
    """One Lua call of a batch: the batch's share of one partition."""

    marker: str
    stream: str
    packed: bytes  # the share's events, as pack_events makes them
    events: int


def partition_writes(typed: Sequence[Event], encoded: Sequence[bytes], packed: bytes,
                     partitions: int) -> list[PartitionWrite]:
    """The batch's calls, one per partition it touches, each share in the batch's order. `packed` is the whole
    batch (pack_events(encoded)): its digest names every share's marker, and a batch in one partition is sent as
    it is (packing again costs CPU on the event loop)."""
    shares: dict[int, list[bytes]] = {}
    for event, payload in zip(typed, encoded, strict=True):
        shares.setdefault(partition_of(event.customer_id, event.store_id, partitions), []).append(payload)
    digest = hashlib.sha256(packed).hexdigest()
    return [PartitionWrite(batch_marker_prefix(p) + digest, events_stream(p),
                           packed if len(shares) == 1 else pack_events(share), len(share))
            for p, share in sorted(shares.items())]


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


async def _encoded(svc: Services, events: Sequence[Any]) -> tuple[list[Event], list[bytes]] | None:
    """The batch typed and encoded if every event is fine (the usual case: one conversion for the whole batch, a
    third of the CPU of going event by event), else None."""
    try:
        typed = batch_from_builtins(events)
    except InvalidEvent:
        return None
    # the same rule as the live flow's gate (pantry.clock.max_accepted_ts)
    clock = await read_clock(svc, last_known=True)
    if max(event.ts for event in typed) > clock.max_accepted_ts:
        return None
    try:
        return typed, list(map(encode_msgpack, typed))
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
    checked = await _encoded(svc, events)
    if checked is None:
        errors = await event_errors(svc, events)
        metrics.EVENTS_REJECTED.inc(len(errors))
        raise BatchRejected(len(events), errors)
    typed, encoded = checked
    nonce = os.urandom(8).hex().encode()
    window = str(max(1, svc.settings.events_dedup_window_s))

    if svc.events_script is None:
        svc.events_script = write_script(svc.events_redis)

    writes = partition_writes(typed, encoded, pack_events(encoded), svc.settings.stream_partitions)

    async def write() -> list[Any]:
        # concurrently: the request waits one round trip, whatever the number of partitions (a failed call fails
        # the whole write, and the guarded retry sends every call again: the markers make that safe)
        return await asyncio.gather(*(
            svc.events_script(keys=[w.marker, w.stream], args=[window, nonce, EVENT_FIELD, w.packed],
                              client=svc.events_redis) for w in writes))

    replies = await svc.events_store.call(write)
    by_other = [bool(replayed) and writer != nonce for replayed, writer in replies]
    duplicate = all(by_other)
    if duplicate:
        metrics.EVENTS_DUPLICATE_BATCHES.inc()
    else:  # what this request wrote (a share another request wrote before was not)
        metrics.EVENTS_ACCEPTED.inc(sum(w.events for w, other in zip(writes, by_other, strict=True) if not other))
    return len(encoded), duplicate
