"""Question: what do the garbage collector's pauses cost the live flow, and does freezing the heap at each batch
(`gc.freeze()`, streaming/sinks.py OnlinePartition) remove them?

Command: `PANTRY_DATA_DIR=.pantry .venv/bin/python -m experiments.live_gc_freeze [RATE] [BATCH] [EVENTS]` (defaults
5,000 events/s, 200 events a batch, 600,000 events: two minutes of the sustained bench at that rate; ~2 x 1 min;
needs the Feast registry of `make demo`, no Redis). The live flow's Python steps run in process, batch by batch, on
the sustained bench's mix (load_tests/bench/sustained.py): parse, gate, route, the customer and store shards (a
flush per batch, as live), the rows' RESP encoding and their feature-log conversion every half second, with the
collector's thresholds of `pantry stream live` (200,000, 50, 1,000). Twice: as before (the collector on), and with
`gc.freeze()` before each batch. Printed for each: CPU per event, the collections and their pauses (gc.callbacks),
and after the run a full collection of everything: its pause (what an old-generation collection costs at that heap)
and the unreachable objects it finds (with freezing, cycles that became garbage after a freeze: never collected).
Result: docs/DECISIONS.md "The live flow's garbage collector".
"""

from __future__ import annotations

import gc
import random
import sys
import time
from collections import defaultdict
from datetime import timedelta

import pyarrow as pa

from load_tests.bench.sustained import BASE_TS
from load_tests.bench.sustained_mix import uniform_event as _event
from pantry import events
from pantry.featurestore import repo
from pantry.featurestore.offline_log import arrow_schema
from pantry.featurestore.resp import RowEncoder
from pantry.settings import get_settings
from streaming.customer_shard import CustomerShardLogic
from streaming.dataflow import parse_batch
from streaming.feature_log import _columns
from streaming.gate import GateLogic, route
from streaming.shards import is_customer_shard
from streaming.sinks import TUPLE_VIEWS
from streaming.sources import Batch
from streaming.store_shard import StoreShardLogic


class Pipeline:
    def __init__(self, layout, rate: int):
        self.layout, self.rate = layout, rate
        self.encoder = RowEncoder(layout, TUPLE_VIEWS)
        self.schemas = {name: arrow_schema(view) for name, view in layout.views.items()}
        self.gate = GateLogic(None)
        self.shards: dict = {}
        self.log: dict[str, list] = defaultdict(list)

    def run(self, raws: list, batch: int, freeze: bool) -> None:
        next_log = self.rate // 2
        for i in range(0, len(raws), batch):
            if freeze:
                gc.freeze()
            gated, _ = self.gate.on_batch([parse_batch(Batch(raws=raws[i:i + batch]))])
            for item in route(gated[0]):
                key, work = item
                if key[0] == "o":  # the outcome join: no outcomes in this mix
                    continue
                logic = self.shards.get(key)
                if logic is None:
                    kind = CustomerShardLogic if is_customer_shard(item) else StoreShardLogic
                    logic = self.shards[key] = kind(None, 0.0)
                for flush in logic.on_batch([work])[0]:
                    self.encoder.commands(flush.online)
                    for row in flush.log:
                        self.log[row[0]].append(row)
            if i >= next_log:  # the feature log's hand-off (LIVE_LOG_HANDOFF_S)
                next_log += self.rate // 2
                for view, rows in self.log.items():
                    pa.RecordBatch.from_pydict(_columns(self.layout.views[view], rows, TUPLE_VIEWS.get(view)),
                                               schema=self.schemas[view])
                self.log.clear()


def measure(layout, raws: list, rate: int, batch: int, freeze: bool) -> None:
    pauses: dict[int, list[float]] = defaultdict(list)
    started: list[float] = [0.0]

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses[info["generation"]].append((time.perf_counter() - started[0]) * 1000)

    gc.collect()
    gc.set_threshold(200_000, 50, 1000)
    gc.callbacks.append(on_gc)
    pipeline = Pipeline(layout, rate)
    cpu = time.process_time()
    try:
        pipeline.run(raws, batch, freeze)
    finally:
        cpu = time.process_time() - cpu
        gc.callbacks.remove(on_gc)
    gc.unfreeze()
    full = time.perf_counter()
    found = gc.collect()
    full = (time.perf_counter() - full) * 1000
    label = "gc.freeze() at each batch" if freeze else "collector as before"
    print(f"{label}: {cpu / len(raws) * 1e6:.1f} us CPU per event")
    for generation, ms in sorted(pauses.items()):
        ms.sort()
        print(f"  generation {generation}: {len(ms)} collections, median {ms[len(ms) // 2]:.0f} ms, max {ms[-1]:.0f} "
              f"ms, {sum(ms):,.0f} ms in all")
    if not pauses:
        print("  no collection")
    print(f"  then a full collection: {full:,.0f} ms, {found:,} unreachable objects")
    del pipeline
    gc.collect()


def main() -> None:
    rate, batch, n = (int(a) for a in (sys.argv[1:] + ["5000", "200", "600000"][len(sys.argv) - 1:])[:3])
    rng, heavy = random.Random(1), [0]
    raws = [(f"{i}-0".encode(), events.encode_msgpack(_event(rng, i, BASE_TS + timedelta(seconds=i / rate), heavy)))
            for i in range(n)]
    layout = repo.layout(get_settings())
    print(f"{n:,} events, {rate:,}/s of event time, {batch} a batch")
    for freeze in (False, True):
        measure(layout, raws, rate, batch, freeze)


if __name__ == "__main__":
    main()
