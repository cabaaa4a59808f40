"""What the live-stock read costs an answer (serving/answers/stock.py): recommendations and next-best-action with a
`store_id` read the store_product rows of their candidates (recommendations: the k best, next-best-action: OVERFETCH
x k actions' products) in one more round trip after the decision's read.
In process, through the serving code itself (Services.read: the guarded store, OnlineReader, the hiredis
round trip) on an own embedded Redis holding a customer's four views and half the candidates' stock rows: the
decision read alone, then followed by the stock read of n rows (9, 30, 60: k = 3, 10, 20; 150: a next-best-action
answer whose 9 coupons cover ~16 products each).

Command: `PANTRY_DATA_DIR=.pantry .venv/bin/python -m experiments.stock_read_cost` (any data dir with a Feast
registry; ~20 s). Result: in docs/DECISIONS.md "Live stock in every answer".
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from pantry.featurestore import repo
from pantry.featurestore.pipeline import write_rows
from pantry.featurestore.reader import OnlineReader, RowRead
from pantry.redis_server import EmbeddedRedis, free_port, sync_client
from pantry.settings import get_settings
from serving.answers import stock
from serving.redis_guard import GuardedStore
from serving.services import Services, read_pipeline

CUSTOMER, STORE = 1111, 298
CUSTOMER_VIEWS = ("customer_session", "customer_activity", "customer_repertoire", "customer_embedding")
ROWS = (9, 30, 60, 150)
REQUESTS = 2000


def seed(settings, layout) -> list[int]:
    client = sync_client(settings)
    now = datetime(2017, 12, 1, tzinfo=UTC)
    write_rows(client, layout, "customer_activity", [((CUSTOMER,), {"orders_7d": 2, "orders_28d": 6}, now)])
    write_rows(client, layout, "customer_repertoire", [((CUSTOMER,), {
        "repertoire_product_ids": list(range(1_000_000, 1_000_050)), "repertoire_scores": [1.0] * 50}, now)])
    write_rows(client, layout, "customer_embedding", [((CUSTOMER,), {"embedding": [0.1] * 64,
                                                                     "model_version": "x"}, now)])
    products = list(range(2_000_000, 2_000_000 + max(ROWS)))
    write_rows(client, layout, "store_product", [((STORE, p), {"units_7d": 3, "units_28d": 9, "on_hand": i % 3,
                                                               "in_stock_prob": 0.9}, now)
                                                 for i, p in enumerate(products[::2])])  # half have a row
    return products


def percentiles(samples: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(samples, n=100)
    return cuts[49], cuts[98]


async def measure(svc: Services, products: list[int]) -> None:
    reads = [RowRead(view, (CUSTOMER,)) for view in CUSTOMER_VIEWS]
    for _ in range(200):  # warm: connections, caches
        await svc.read(reads, None)
    base = []
    for _ in range(REQUESTS):
        t = time.perf_counter()
        await svc.read(reads, None)
        base.append((time.perf_counter() - t) * 1e3)
    p50, p99 = percentiles(base)
    print(f"decision read alone (4 customer views): p50 {p50:.3f} ms, p99 {p99:.3f} ms")
    print(f"{'stock rows':>10s} {'p50 total':>10s} {'p99 total':>10s} {'p50 added':>10s} {'p99 added':>10s}")
    for n in ROWS:
        both, added = [], []
        for _ in range(REQUESTS):
            t = time.perf_counter()
            await svc.read(reads, None)
            t2 = time.perf_counter()
            await stock.out_of_stock_at(svc, STORE, products[:n], None)
            t3 = time.perf_counter()
            both.append((t3 - t) * 1e3)
            added.append((t3 - t2) * 1e3)
        (b50, b99), (a50, a99) = percentiles(both), percentiles(added)
        print(f"{n:10d} {b50:10.3f} {b99:10.3f} {a50:10.3f} {a99:10.3f}", flush=True)


def main() -> None:
    base = get_settings()
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(port=free_port(), directory=Path(tmp)).start()
        try:
            settings = msgspec.structs.replace(base, embedded_redis_port=server.port, redis_url=None)
            layout = repo.layout(settings)
            products = seed(settings, layout)
            store = GuardedStore(slack_s=settings.redis_socket_timeout_s / 2, attempt_s=settings.redis_socket_timeout_s)
            svc = Services(settings, None, read_pipeline(settings), store, None, None, None, None)
            svc.reader = OnlineReader(layout, "wall")
            asyncio.run(measure(svc, products))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
