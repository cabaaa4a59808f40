"""Question: does the live flow's CPU per event grow as its state grows, and on which side (gate, customers, stores)?

Command: `.venv/bin/python -m experiments.state_growth [EVENTS] [RATE]` (defaults 1,500,000 events at 10,000/s:
two and a half minutes of the sustained bench's 10,000/s; ~3 min, no Redis, no Feast). The sustained bench's mix
(load_tests/bench/sustained.py) goes through the gate and one customer and one store shard logic in process, in
batches of 500 with rows built after every batch (`flush_s` 0, as live) and the collector frozen before each batch
(as the live online sink does). Printed per 100,000 events: CPU microseconds per event of each step and the
process's peak RSS.

`PANTRY_DATA_DIR=.pantry .venv/bin/python -m experiments.state_growth pipeline [EVENTS]` (default 600,000: one
minute at 10,000/s; needs the Feast registry of `make demo`, no Redis) runs the whole of the live flow's Python
instead, as experiments.live_gc_freeze does (parse, gate, all 32 shards, the rows' RESP encoding and their
feature-log conversion, 200 events a batch, frozen), and prints its CPU per event per 100,000 events.

`.venv/bin/python -m experiments.state_growth snapshot [EVENTS]` (default 1,500,000) feeds the mix to one customer and
one store shard logic and prints what encoding their states for a recovery snapshot costs (size, CPU of three calls;
the indexes a state rebuilds at resume are left out of it), decoding it at a resume, each logic's CPU per event, and
the process's peak RSS.
`.venv/bin/python -m experiments.state_growth memory STEP [EVENTS]` (STEP gate, customers or stores; default
1,000,000 events) feeds the mix to that one step alone and prints the memory its state holds per event (tracemalloc).
Every mode sends the sustained bench's default mix (PANTRY_BENCH_SUSTAINED_MIX=chain: needs `pantry data load`;
`uniform` for the stress variant; load_tests/bench/sustained_mix.py).
Result: docs/STREAMING.md "Limits" (Sustained load, Ten minutes), docs/DECISIONS.md "Compact tops", "Small pairs in
columns".
"""

from __future__ import annotations

import gc
import resource
import sys
import time
from datetime import timedelta

from load_tests.bench.sustained import BASE_TS, mix_name
from load_tests.bench.sustained_mix import mix
from streaming.customer_shard import CustomerShardLogic
from streaming.features.event import from_event
from streaming.gate import GateState, gate_apply
from streaming.shards import Work
from streaming.store_shard import StoreShardLogic

CHUNK = 100_000
BATCH = 500


def _mix():
    """The sustained bench's mix (PANTRY_BENCH_SUSTAINED_MIX: chain, the default, needs `pantry data load`)."""
    from pantry.settings import get_settings

    return mix(get_settings(), mix_name(), seed=1)


def main(n: int, rate: float) -> None:
    event = _mix()
    customers, stores, gate = CustomerShardLogic(None, 0.0), StoreShardLogic(None, 0.0), GateState()
    for lo in range(0, n, CHUNK):
        chunk = [from_event(event(i, BASE_TS + timedelta(seconds=i / rate)))
                 for i in range(lo, lo + CHUNK)]
        batches = [chunk[i:i + BATCH] for i in range(0, CHUNK, BATCH)]
        cpu = []
        for step in (lambda b: gate_apply(gate, b),
                     lambda b: customers.on_batch([Work(b, False, None, False)]),
                     lambda b: stores.on_batch([Work(b, False, None, False)])):
            started = time.process_time()
            for batch in batches:
                gc.freeze()
                step(batch)
            cpu.append(1e6 * (time.process_time() - started) / CHUNK)
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{lo + CHUNK:>9,} events  gate {cpu[0]:5.1f}  customers {cpu[1]:5.1f}  stores {cpu[2]:5.1f} us/event"
              f"  peak RSS {rss_mb:,.0f} MB", flush=True)


def pipeline(n: int, rate: int = 10_000, batch: int = 200) -> None:
    from experiments.live_gc_freeze import Pipeline
    from pantry import events
    from pantry.featurestore import repo
    from pantry.settings import get_settings

    event = _mix()
    raws = [(f"{i}-0".encode(), events.encode_msgpack(event(i, BASE_TS + timedelta(seconds=i / rate))))
            for i in range(n)]
    flow = Pipeline(repo.layout(get_settings()), rate)
    gc.set_threshold(200_000, 50, 1000)  # `pantry stream live`'s
    cpu = []
    for lo in range(0, n, CHUNK):
        started = time.process_time()
        flow.run(raws[lo:lo + CHUNK], batch, freeze=True)
        cpu.append(1e6 * (time.process_time() - started) / len(raws[lo:lo + CHUNK]))
        print(f"{lo + CHUNK:>9,} events  whole flow {cpu[-1]:5.1f} us/event", flush=True)


def snapshot(n: int, rate: float = 10_000) -> None:
    """What a recovery snapshot of that state costs: every shard's state is encoded at each one (the shards see
    events in every epoch), here one customer and one store shard logic holding all of it; and decoding it at a
    resume. Also each logic's CPU per event while fed, and the process's peak RSS."""
    event = _mix()
    logics = {"customers": CustomerShardLogic(None, 0.0), "stores": StoreShardLogic(None, 0.0)}
    fed = dict.fromkeys(logics, 0.0)
    for lo in range(0, n, CHUNK):
        chunk = [from_event(event(i, BASE_TS + timedelta(seconds=i / rate)))
                 for i in range(lo, lo + CHUNK)]
        for i in range(0, CHUNK, BATCH):
            gc.freeze()
            for name, logic in logics.items():
                started = time.process_time()
                logic.on_batch([Work(chunk[i:i + BATCH], False, None, False)])
                fed[name] += time.process_time() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{n:,} events: peak RSS {peak:,.0f} MB")
    for name, logic in logics.items():
        times = []
        for _ in range(3):  # the first call also faults in its output buffer, as a live snapshot does
            started = time.process_time()
            raw = logic.snapshot()
            times.append(time.process_time() - started)
        started = time.process_time()
        type(logic)(raw, 0.0)
        decode_s = time.process_time() - started
        print(f"  {name}: {fed[name] / n * 1e6:.2f} us CPU per event; snapshot {len(raw) / 2**20:,.1f} MB in "
              f"{', '.join(f'{t:.2f}' for t in times)} s CPU; decoded at resume in {decode_s:.2f} s")


def memory(step: str, n: int, rate: float = 10_000) -> None:
    """The memory one step's state holds per event (every event accepted and kept: within the lateness bound and
    the windows): Python's and numpy's live allocations (tracemalloc), after each 100,000 with the events freed."""
    import tracemalloc

    event = _mix()
    gate, customers, stores = GateState(), CustomerShardLogic(None, 0.0), StoreShardLogic(None, 0.0)
    apply = {"gate": lambda b: gate_apply(gate, b),
             "customers": lambda b: customers.on_batch([Work(b, False, None, False)]),
             "stores": lambda b: stores.on_batch([Work(b, False, None, False)])}[step]
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for lo in range(0, n, CHUNK):
        chunk = [from_event(event(i, BASE_TS + timedelta(seconds=i / rate)))
                 for i in range(lo, lo + CHUNK)]
        for i in range(0, CHUNK, BATCH):
            gc.freeze()
            apply(chunk[i:i + BATCH])
        del chunk
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - base
        print(f"{lo + CHUNK:>9,} events  {step}: {held / 2**20:,.0f} MB held, {held / (lo + CHUNK):,.0f} bytes/event",
              flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["memory"]:
        memory(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 1_000_000)
    elif sys.argv[1:2] == ["pipeline"]:
        pipeline(int(sys.argv[2]) if len(sys.argv) > 2 else 600_000)
    elif sys.argv[1:2] == ["snapshot"]:
        snapshot(int(sys.argv[2]) if len(sys.argv) > 2 else 1_500_000)
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_500_000,
             float(sys.argv[2]) if len(sys.argv) > 2 else 10_000)
