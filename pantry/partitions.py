"""The live event stream's partitions: which one an event goes to, and each one's Redis keys.

`Settings.stream_partitions` = N streams. An event goes to its customer's partition (customer_id % N), so a
customer's events, and the marker of their erasure, stay in order in one stream; an event without a customer (an
inventory count) goes to its store's (store_id % N). The live flow reads each partition in its own Bytewax source
partition, through its own gate (duplicates, lateness: a duplicate has the same customer, so the same partition);
the shards after the gates are keyed by customer and by store as before (streaming/dataflow.py).

Partition 0 keeps the keys of an unpartitioned stream (`pantry:events`, `pantry:stream:counters`,
`pantry:stream:live`, the gate key "gate"), so N = 1 is the single stream it always was, and a replay's recovery state
(one partition) is partition 0's. Partition p > 0 has its own stream `pantry:events:<p>`, in its own Redis Cluster
slot: the partitions spread over a cluster's nodes. Each stream's batch markers carry its name as their hash tag,
so the ingest script's keys are in one slot.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pantry.keys import EVENT_BATCH_PREFIX, EVENTS_STREAM, LIVE_HEARTBEAT, STREAM_COUNTERS

SOURCE_PARTITION = "events"  # Bytewax source partition of partition 0 (and of a replay)
GATE_KEY = "gate"  # the gate's state key of partition 0 (and of a replay)


def partition_of(customer_id: int | None, store_id: int | None, n: int) -> int:
    """The partition of an event: its customer's, else its store's, else 0."""
    if n <= 1:
        return 0
    if customer_id is not None:
        return customer_id % n
    if store_id is not None:
        return store_id % n
    return 0


def _suffixed(base: str, p: int) -> str:
    return base if p == 0 else f"{base}:{p}"


def events_stream(p: int) -> str:
    """The stream of partition p."""
    return _suffixed(EVENTS_STREAM, p)


def events_streams(n: int) -> list[str]:
    return [events_stream(p) for p in range(n)]


def batch_marker_prefix(p: int) -> str:
    """Prefix of an ingested batch's marker in partition p (+ sha256 of the whole batch): in the stream's slot."""
    return EVENT_BATCH_PREFIX if p == 0 else "{" + events_stream(p) + "}:batch:"


def counters_key(p: int) -> str:
    """Partition p's gate counters (processed, duplicate, late, invalid, ..., max_event_ts, trimmed)."""
    return _suffixed(STREAM_COUNTERS, p)


def heartbeat_key(p: int) -> str:
    """Partition p's heartbeat (pantry.health): ts, last_id in its stream, pid, host, processed."""
    return _suffixed(LIVE_HEARTBEAT, p)


def source_partition(p: int) -> str:
    return SOURCE_PARTITION if p == 0 else f"{SOURCE_PARTITION}-{p}"


def gate_key(p: int) -> str:
    return GATE_KEY if p == 0 else f"{GATE_KEY}-{p}"


def partition_of_source(name: str) -> int:
    """The partition number of a source partition's name (source_partition's inverse)."""
    return 0 if name == SOURCE_PARTITION else int(name.rsplit("-", 1)[1])


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def merge_counters(hashes: Iterable[Mapping[bytes | str, bytes | str]]) -> dict[str, float]:
    """The partitions' counter hashes (HGETALL replies, raw or decoded) as one: counts summed, `max_event_ts` the
    greatest. A field that is not a number is left out."""
    total: dict[str, float] = {}
    for raw in hashes:
        for key, value in raw.items():
            name = _text(key)
            try:
                number = float(_text(value))
            except ValueError:
                continue
            if name == "max_event_ts":
                total[name] = max(total.get(name, number), number)
            else:
                total[name] = total.get(name, 0.0) + number
    return total
