"""The property the partitioned live source (pantry/partitions.py) rests on, on the gate and shards: events split into
stream partitions by customer (a customer-less event by store), each partition with its own gate state, reach the
shards interleaved in any order, and every row of every view at the end equals the rows of one gate reading the
events in event-time order. Customer shards see each customer's events in order (one partition holds them all);
store shards see a store's events from every partition, in an order that depends on which partition runs ahead."""

from __future__ import annotations

import pytest

from pantry.partitions import partition_of
from pantry.settings import Settings
from streaming.customer_shard import CustomerShardLogic
from streaming.features.event import FEATURE_KINDS, Ev
from streaming.gate import GateState, gate_apply
from streaming.shards import NSHARDS, Work
from streaming.sources import ReplayPartition, SourceState
from streaming.store_shard import StoreShardLogic

BATCH = 500


@pytest.fixture(scope="module")
def events(data_slice, settings: Settings) -> list[Ev]:
    part = ReplayPartition(settings, None, None, SourceState())
    out: list[Ev] = []
    try:
        while True:
            for batch in part.next_batch():
                out.extend(batch.events)
    except StopIteration:
        pass
    return out


def run(partitions: list[list[Ev]], ahead: int) -> tuple[dict, dict[str, int]]:
    """Gate each partition on its own state, partition 0 `ahead` batches before the others, and feed the shards
    batch by batch; the final refresh at the newest event time of all. Returns {(view, join): (features, time)} and
    the summed gate counters."""
    gates = [GateState() for _ in partitions]
    customers = [CustomerShardLogic(None, flush_s=1e9) for _ in range(NSHARDS)]
    stores = [StoreShardLogic(None, flush_s=1e9) for _ in range(NSHARDS)]
    pos = [0] * len(partitions)
    step = 0
    while any(p < len(events) for p, events in zip(pos, partitions, strict=True)):
        for i, events in enumerate(partitions):
            if i > 0 and step < ahead:
                continue
            chunk, pos[i] = events[pos[i]:pos[i] + BATCH], pos[i] + BATCH
            accepted, _rejected = gate_apply(gates[i], chunk)
            by_customer: list[list[Ev]] = [[] for _ in range(NSHARDS)]
            by_store: list[list[Ev]] = [[] for _ in range(NSHARDS)]
            for e in accepted:
                if e.kind not in FEATURE_KINDS:
                    continue
                if e.customer_id is not None:
                    by_customer[e.customer_id % NSHARDS].append(e)
                if e.store_id is not None:
                    by_store[e.store_id % NSHARDS].append(e)
            for shard, share in zip(customers + stores, by_customer + by_store, strict=True):
                if share:
                    shard.on_batch([Work(share, False, None, False)])
        step += 1
    as_of = max(g.max_t for g in gates)
    rows = {}
    for shard in customers + stores:
        out, _ = shard.on_batch([Work([], True, as_of, True)])
        rows.update({(view, join): (features, t) for view, join, features, t in out[0].online})
    counters: dict[str, int] = {}
    for g in gates:
        for name, value in g.counters.items():
            counters[name] = counters.get(name, 0) + value
    return rows, counters


@pytest.mark.parametrize("ahead", [0, 7, 40])
def test_partitioned_gates_give_the_rows_of_one_gate_whatever_the_interleaving(events: list[Ev], ahead: int):
    reposted = events[100:150]  # a client retrying: each of these events again, right after it (within lateness)
    stream = events[:100] + [e for pair in zip(reposted, reposted, strict=True) for e in pair] + events[150:]
    one, one_counters = run([stream], 0)
    parts = [[e for e in stream if partition_of(e.customer_id, e.store_id, 2) == p] for p in range(2)]
    assert all(parts)
    two, two_counters = run(parts, ahead)
    assert len(one) > 1000
    assert {view for view, _ in one} >= {"customer_session", "customer_activity", "customer_repertoire",
                                         "store_traffic", "store_product"}
    assert two == one
    # each re-posted event met the gate of its own partition, which dropped it
    assert one_counters["duplicate"] == two_counters["duplicate"] == len(reposted)
    assert one_counters["processed"] == two_counters["processed"]
