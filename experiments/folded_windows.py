"""Question: what does folding sales older than the lateness bound into minutes (streaming/features/windows.py) do to
the store shards' state and CPU, on the sustained bench's mix over more event time than the lateness bound?

Command: `.venv/bin/python -m experiments.folded_windows [RATE] [MINUTES]` (defaults 1,000 events/s of event time for
40 minutes: 2.4M events, ~2 min; no Redis). The sustained bench's mix (load_tests/bench/sustained.py: 5% of the events
on the hot pair, store 1 x product 1) goes through the gate and one store shard logic in process, in batches of 500
with rows after every batch (`flush_s` 0, as live). Printed every 10 minutes of event time: the hot pair's entries
held (exact sales, folded minutes), store 1's sales entries held (exact lines, folded minutes), every store's sales
entries, the shard state's traced memory, and the store shard's CPU per event over those 10 minutes. Run it on the
commit before the folding (a `git worktree`) for the other side: it reads the folded fields only if they exist.
Result: docs/DECISIONS.md "Windows of sums count minutes".
"""

from __future__ import annotations

import gc
import random
import sys
import time
import tracemalloc
from datetime import timedelta

from load_tests.bench.sustained import BASE_TS
from load_tests.bench.sustained_mix import uniform_event as _event
from streaming.features.event import from_event
from streaming.features.store_product import pair_key
from streaming.gate import GateState, gate_apply
from streaming.shards import Work
from streaming.store_shard import StoreShardLogic

BATCH = 500


def main(rate: float, minutes: int) -> None:
    rng, heavy_views = random.Random(1), [0]
    gate, stores = GateState(), StoreShardLogic(None, 0.0)
    hot = pair_key(1, 1)
    per_report = int(rate * 600)
    tracemalloc.start()
    cpu, i = 0.0, 0
    total = int(rate * 60 * minutes)
    while i < total:
        batch = [from_event(_event(rng, j, BASE_TS + timedelta(seconds=j / rate), heavy_views))
                 for j in range(i, i + BATCH)]
        i += BATCH
        accepted, _ = gate_apply(gate, batch)
        started = time.process_time()
        gc.freeze()
        stores.on_batch([Work(accepted, False, None, False)])
        cpu += time.process_time() - started
        if i % per_report == 0:
            shard = stores.shard
            sp = shard.pairs.get(hot)
            store = shard.stores.get(1)
            held = sum(len(s.sales) + len(getattr(s, "sales_folded", ())) for s in shard.stores.values())
            traced = tracemalloc.get_traced_memory()[0] / 2**20
            pair_minutes = getattr(sp, "minutes", None)  # None: not folded yet, or the commit before the folding
            print(f"{i / rate / 60:5.0f} min of event time: hot pair {len(sp.ts):,} sales + "
                  f"{len(pair_minutes.ms) if pair_minutes else 0:,} minutes; store 1 {len(store.sales):,} lines + "
                  f"{len(getattr(store, 'sales_folded', ())):,} minutes; all stores' sales entries {held:,}; "
                  f"traced {traced:,.0f} MB; store shard {cpu / per_report * 1e6:.1f} us/event", flush=True)
            cpu = 0.0


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 1000.0, int(sys.argv[2]) if len(sys.argv) > 2 else 40)
