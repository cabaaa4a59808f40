"""Did every acknowledged event take effect? Two checks, each able to fail:

- in the stream: every event id the service acknowledged (202) is in `pantry:events` after `start_id`, and how many
  ids are there more than once (a retried batch written twice);
- processed by the flow: the flow's counters (`pantry:stream:counters`: processed + duplicate + late + invalid,
  written from its recovery state, so exact across restarts) grew by as many events as the stream did. Waits for
  the flow to catch up; what is still missing then was never processed.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable

import msgspec

from pantry.events import decode_msgpack
from pantry.keys import EVENT_FIELD, EVENTS_STREAM, STREAM_COUNTERS

SEEN = ("processed", "duplicate", "late", "invalid")


class StreamCheck(msgspec.Struct, kw_only=True):
    acked: int
    missing: int  # acknowledged, not in the stream
    written_twice: int  # ids of ours in the stream more than once
    missing_sample: list[str] = msgspec.field(default_factory=list)


class FlowCheck(msgspec.Struct, kw_only=True):
    stream_added: int
    flow_seen_added: int
    unprocessed: int  # stream entries the flow had not counted when the wait ended
    waited_s: float


def last_id(client) -> str:
    entries = client.xrevrange(EVENTS_STREAM, count=1)
    return entries[0][0].decode() if entries else "0-0"


def stream_ids(client, start_id: str, prefix: str, chunk: int = 10_000) -> Counter[str]:
    """Event ids starting with `prefix` in the stream after start_id, with how many times each is there."""
    seen: Counter[str] = Counter()
    cursor = "(" + start_id
    while True:
        entries = client.xrange(EVENTS_STREAM, min=cursor, max="+", count=chunk)
        if not entries:
            return seen
        for _, fields in entries:
            try:
                event_id = decode_msgpack(fields[EVENT_FIELD]).event_id
            except Exception:  # a hostile entry that does not decode is not ours
                continue
            if event_id.startswith(prefix):
                seen[event_id] += 1
        cursor = "(" + entries[-1][0].decode()


def check_stream(client, start_id: str, prefix: str, acked: Iterable[str]) -> StreamCheck:
    present = stream_ids(client, start_id, prefix)
    acked = list(acked)
    missing = [i for i in acked if i not in present]
    return StreamCheck(acked=len(acked), missing=len(missing), missing_sample=missing[:5],
                       written_twice=sum(1 for n in present.values() if n > 1))


def flow_seen(client) -> int:
    raw = client.hgetall(STREAM_COUNTERS)
    return int(sum(float(raw.get(k.encode(), 0) or 0) for k in SEEN))


def stream_length_since(client, start_id: str) -> int:
    n = 0
    cursor = "(" + start_id
    while True:
        entries = client.xrange(EVENTS_STREAM, min=cursor, max="+", count=10_000)
        if not entries:
            return n
        n += len(entries)
        cursor = "(" + entries[-1][0].decode()


def check_flow(client, start_id: str, seen_at_start: int, timeout_s: float = 60.0) -> FlowCheck:
    started = time.monotonic()
    while True:
        added = stream_length_since(client, start_id)
        seen = flow_seen(client) - seen_at_start
        if seen >= added or time.monotonic() - started > timeout_s:
            return FlowCheck(stream_added=added, flow_seen_added=seen, unprocessed=max(0, added - seen),
                             waited_s=round(time.monotonic() - started, 1))
        time.sleep(0.5)
