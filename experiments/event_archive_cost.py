"""Question: what does the event archive (streaming/event_archive.py) cost the live flow, per 10,000 events?

Command: `PANTRY_DATA_DIR=.pantry .venv/bin/python -m experiments.event_archive_cost` (no Redis; ~5 s). It feeds
10,000 accepted events (a synthetic live mix: purchases, impressions, clicks, cart events, inventory, substitution
feedback; then, when the data set is there, 10,000 real purchase lines of Complete Journey in event-time order)
to the archive as the gate hands them on (batches of 2,000, the live source's LIVE_BATCH) and times, median of 15:
- the flow's side: `append` of the five batches (buffering; the hand-off to the thread is a queue put);
- the writer thread's side: the conversion to an Arrow record batch (`archive_batch`) and the parquet files
  (`LogWriter.write`, one file per event day), which run beside the flow, holding the GIL for the conversion only;
- `flush` end to end (what an epoch's snapshot waits for).
Result: see docs/DECISIONS.md, "The event archive".
"""

from __future__ import annotations

import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa

from pantry import events as E
from pantry.event_archive import ARCHIVE_SCHEMA, TIME_COLUMN
from pantry.featurestore.offline_log import LogWriter
from pantry.settings import Settings
from streaming.event_archive import EventArchive, archive_batch
from streaming.features.event import from_event

N = 10_000
BATCH = 2_000
REPEATS = 15
T0 = datetime(2018, 1, 2, tzinfo=UTC)


def live_mix(n: int, seed: str) -> list:
    out = []
    for i in range(n):
        t, c, p = T0 + timedelta(seconds=i * 0.2), 1_000 + i % 2_000, 800_000 + i % 5_000
        k = i % 10
        if k < 3:
            e = E.Purchase(event_id=f"{seed}-{i}", ts=t, customer_id=c, store_id=300 + i % 50, basket_id=i // 8,
                           product_id=p, quantity=1, sales_value=2.5, discounts=0.3)
        elif k < 6:
            e = E.Impression(event_id=f"{seed}-{i}", ts=t, customer_id=c, decision_id=f"d-{i // 10}", product_id=p)
        elif k == 6:
            e = E.Click(event_id=f"{seed}-{i}", ts=t, customer_id=c, decision_id=f"d-{i // 10}", product_id=p)
        elif k == 7:
            e = E.AddToCart(event_id=f"{seed}-{i}", ts=t, customer_id=c, store_id=300, product_id=p)
        elif k == 8:
            e = E.Inventory(event_id=f"{seed}-{i}", ts=t, store_id=300 + i % 50, product_id=p, on_hand=i % 7)
        else:
            e = E.SubstitutionFeedback(event_id=f"{seed}-{i}", ts=t, customer_id=c, original_product_id=p,
                                       substitute_product_id=p + 1, accepted=i % 3 == 0)
        out.append(from_event(e))
    return out


def real_purchases(n: int, seed: str) -> list | None:
    """n purchase lines of the data set (the replay's columns) as the live flow would archive them."""
    from pantry import dataset
    from pantry.settings import get_settings
    from streaming.features.event import Ev

    settings = get_settings()
    if not (settings.dataset_dir / "events.parquet").exists():
        return None
    cols = ["event_id", "type", "ts", "customer_id", "store_id", "product_id", "basket_id", "quantity", "sales_value"]
    rows = dataset.read_events(settings, columns=cols).slice(200_000, n).to_pylist()
    return [Ev(f"{seed}-{r['event_id']}", r["type"], r["ts"].timestamp(), r["customer_id"], r["store_id"],
               r["product_id"], r["basket_id"], r["quantity"] or 0, r["sales_value"] or 0.0) for r in rows]


def main() -> None:
    measure("synthetic live mix", live_mix)
    measure("Complete Journey lines", real_purchases)


def measure(label: str, make) -> None:
    if make(1, "probe") is None:
        print(f"{label}: no data set at PANTRY_DATA_DIR")
        return
    appends, converts, writes, flushes = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp))
        archive = EventArchive(settings, "bench")
        writer = LogWriter(Path(tmp) / "direct", "bench", time_column=TIME_COLUMN)
        for r in range(REPEATS):
            evs = make(N, f"r{r}")
            batches = [evs[i:i + BATCH] for i in range(0, N, BATCH)]
            now = time.time()
            start = time.perf_counter()
            for b in batches:
                archive.append(now, b)
            appends.append(time.perf_counter() - start)
            start = time.perf_counter()
            archive.flush()
            flushes.append(time.perf_counter() - start)
            start = time.perf_counter()
            batch = archive_batch([(now, b) for b in batches])
            converts.append(time.perf_counter() - start)
            start = time.perf_counter()
            writer.write("", pa.Table.from_batches([batch], schema=ARCHIVE_SCHEMA))
            writes.append(time.perf_counter() - start)
        archive.close()
        size = sum(p.stat().st_size for p in (Path(tmp) / "direct").rglob("*.parquet")) / REPEATS
    ms = {name: 1000 * statistics.median(v) for name, v in
          (("append (flow)", appends), ("convert (thread)", converts), ("parquet write (thread)", writes),
           ("flush end to end", flushes))}
    print(label)
    for name, value in ms.items():
        print(f"{name:>24}: {value:7.2f} ms per {N:,} events")
    print(f"{'file size':>24}: {size / 1024:7.1f} KiB per {N:,} events ({size / N:.1f} bytes per event)")


if __name__ == "__main__":
    main()
