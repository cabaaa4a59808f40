"""What the guardrail loop's KPI read costs the worker that runs it (docs/DECISIONS.md "Live batches linger").

Once a second the guardrail loop sums one running experiment's KPI keys. Read whole, the 16 outcome shards' hashes
hold every key of every day kept; asked with HSCAN MATCH on the experiment part of the field, Redis returns that
experiment's fields only. On a built state this times both (the worker's CPU: parse and merge; and wall time, which
adds Redis's work) for the last experiment found in the KPIs, and checks that they give the same totals.

    make bench   # once: builds .pantry/bench (its KPIs have the bench's experiments)
    PANTRY_DATA_DIR=.pantry/bench python -m experiments.kpi_read_cost [REPEATS]
"""

from __future__ import annotations

import sys
import time

from experiments.built_state import own_redis
from pantry.kpis import KPI_HASHES, KpiKey, merge_shards
from pantry.redis_server import sync_client


def main(repeats: int) -> None:
    with own_redis() as settings:
        client = sync_client(settings, timeout_s=120.0)  # a big state's AOF takes a while to load
        fields = sum(client.hlen(name) for name in KPI_HASHES)
        found = sorted({KpiKey.parse(f).experiment for name in KPI_HASHES for f in client.hkeys(name)} - {""})
        if not found:
            sys.exit("no experiment in the KPIs: run `make bench` first")
        exp = found[-1]
        print(f"{fields:,} KPI fields over {len(KPI_HASHES)} hashes, {len(found)} experiments; reading {exp}")
        for _ in range(repeats):
            cpu, wall = time.process_time(), time.perf_counter()
            pipe = client.pipeline(transaction=False)
            for name in KPI_HASHES:
                pipe.hgetall(name)
            whole = merge_shards(pipe.execute(), {exp})
            cpu_whole, wall_whole = time.process_time() - cpu, time.perf_counter() - wall
            cpu, wall = time.process_time(), time.perf_counter()
            pipe = client.pipeline(transaction=False)
            for name in KPI_HASHES:
                pipe.hscan(name, 0, match=f"*|{exp}|*", count=1000)
            replies = pipe.execute()
            matched = merge_shards([fields for _cursor, fields in replies], {exp})
            cpu_match, wall_match = time.process_time() - cpu, time.perf_counter() - wall
            assert matched == whole and all(cursor == 0 for cursor, _ in replies)
            print(f"CPU {cpu_whole * 1000:.2f} ms whole vs {cpu_match * 1000:.2f} ms matched; wall "
                  f"{wall_whole * 1000:.2f} vs {wall_match * 1000:.2f} ms; {len(whole)} keys, the same totals")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
