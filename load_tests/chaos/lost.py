"""Did every acknowledged event take effect? Two checks, each able to fail:

- in the stream: every event id the service acknowledged (202) is in the event stream (every partition's stream,
  pantry/partitions.py) after the position `start_id`, and how many ids are there more than once (a retried batch
  written twice);
- processed by the flow: the flow's counters (every partition's: processed + duplicate + late + invalid, written
  from its recovery state, so exact across restarts) grew by as many events as the streams did. Waits for the flow
  to catch up; what is still missing then was never processed.

A position (`last_id`) is each partition's last entry id, comma-separated: one id with one partition, as it always
was; the functions that take one read as many partitions as it names.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator

import msgspec

from pantry.events import decode_msgpack
from pantry.keys import EVENT_FIELD
from pantry.partitions import counters_key, events_stream, events_streams, merge_counters

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


def last_id(client, partitions: int = 1) -> str:
    """Where the event stream ends now: each partition's last entry id ("0-0": empty), comma-separated. One position
    for all partitions would not do: their ids are their own, one partition's next id may sort before another's
    last."""
    ids = []
    for stream in events_streams(partitions):
        entries = client.xrevrange(stream, count=1)
        ids.append(entries[0][0].decode() if entries else "0-0")
    return ",".join(ids)


def _streams_since(start_id: str) -> list[tuple[str, str]]:
    """(stream, last id before) of each partition a position names."""
    return [(events_stream(p), since) for p, since in enumerate(start_id.split(","))]


def _chunks_after(client, stream: str, since: str, chunk: int) -> Iterator[list]:
    """The entries of `stream` after the id `since`, `chunk` at a time."""
    cursor = "(" + since
    while True:
        entries = client.xrange(stream, min=cursor, max="+", count=chunk)
        if not entries:
            return
        yield entries
        cursor = "(" + entries[-1][0].decode()


def stream_ids(client, start_id: str, prefix: str, chunk: int = 10_000) -> Counter[str]:
    """Event ids starting with `prefix` in the streams after the position start_id, with how many times each is
    there."""
    seen: Counter[str] = Counter()
    for stream, since in _streams_since(start_id):
        for entries in _chunks_after(client, stream, since, chunk):
            for _, fields in entries:
                try:
                    event_id = decode_msgpack(fields[EVENT_FIELD]).event_id
                except Exception:  # a hostile entry that does not decode is not ours (nor is an erasure marker)
                    continue
                if event_id.startswith(prefix):
                    seen[event_id] += 1
    return seen


def check_stream(client, start_id: str, prefix: str, acked: Iterable[str]) -> StreamCheck:
    present = stream_ids(client, start_id, prefix)
    acked = list(acked)
    missing = [i for i in acked if i not in present]
    return StreamCheck(acked=len(acked), missing=len(missing), missing_sample=missing[:5],
                       written_twice=sum(1 for n in present.values() if n > 1))


def flow_seen(client, partitions: int = 1) -> int:
    """The entries the flow's gates took, over every partition."""
    counters = merge_counters(client.hgetall(counters_key(p)) for p in range(partitions))
    return int(sum(counters.get(k, 0.0) for k in SEEN))


def stream_length_since(client, start_id: str) -> int:
    return sum(len(entries) for stream, since in _streams_since(start_id)
               for entries in _chunks_after(client, stream, since, 10_000))


def check_flow(client, start_id: str, seen_at_start: int, timeout_s: float = 60.0) -> FlowCheck:
    partitions = len(_streams_since(start_id))
    started = time.monotonic()
    while True:
        added = stream_length_since(client, start_id)
        seen = flow_seen(client, partitions) - seen_at_start
        if seen >= added or time.monotonic() - started > timeout_s:
            return FlowCheck(stream_added=added, flow_seen_added=seen, unprocessed=max(0, added - seen),
                             waited_s=round(time.monotonic() - started, 1))
        time.sleep(0.5)
