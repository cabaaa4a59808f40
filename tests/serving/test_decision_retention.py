"""The decision log is bounded by count (MAXLEN ~), by age (MINID ~ by decisions_retention_s) and by bytes (a JSON
field over decisions_max_field_bytes is replaced by a marker), on a real Redis through the worker's real pipeline."""

from __future__ import annotations

import asyncio
import json
import os
import time

from pantry.keys import DECISIONS_PER_CUSTOMER, DECISIONS_STREAM, decisions_of
from pantry.redis_server import sync_client
from pantry.settings import from_env
from serving.decisions import DecisionLog
from serving.services import read_pipeline


def isolated(settings, db: int):
    env = {**os.environ, "PANTRY_DATA_DIR": str(settings.data_dir),
           "REDIS_URL": f"redis://127.0.0.1:{settings.embedded_redis_port}/{db}",
           "PANTRY_REDIS_SOCKET_TIMEOUT_S": "2"}
    s = from_env(env)
    sync_client(s).flushdb()
    return s


def record(log: DecisionLog, n: int, request=None, items=None, customer: int | None = None) -> None:
    """n decisions d0..d{n-1}, of customers 0..n-1 (or all of `customer`)."""
    for i in range(n):
        log.record(decision_id=f"d{i}", endpoint="recommendations",
                   request=request or {"customer_id": i, "k": 10}, model="recommender", model_version="v1",
                   customer_id=i if customer is None else customer, surface="for_you", experiment_id="", arm="",
                   elapsed_ms=1.0,
                   feature_ages={"customer_session": 1.0}, fallback=None, items=items or [{"product_id": i}],
                   now="2017-06-01T00:00:00Z")


async def drain(log: DecisionLog) -> None:
    while not log.queue.empty():
        await log.flush_once()


def test_count_age_and_bytes_bounds(settings):
    s = isolated(settings, 15)
    client = sync_client(s)

    async def run() -> None:
        pipeline = read_pipeline(s)
        try:
            # count: MAXLEN ~ 1000 over 5,000 entries keeps 1,000 plus at most one macro node (100 entries)
            log = DecisionLog(pipeline, maxlen=1000, retention_s=30 * 86400.0, trim_every_s=3600.0)
            record(log, 5000)
            await drain(log)
            assert 1000 <= client.xlen(DECISIONS_STREAM) <= 1100, client.xlen(DECISIONS_STREAM)

            # age: 300 entries 40 days old, then a flush with a 30-day retention trims them (whole macro nodes)
            client.delete(DECISIONS_STREAM)
            old_ms = int((time.time() - 40 * 86400) * 1000)
            for i in range(300):
                client.xadd(DECISIONS_STREAM, {b"decision_id": b"old"}, id=f"{old_ms + i}-0")
            log = DecisionLog(pipeline, maxlen=1_000_000, retention_s=30 * 86400.0, trim_every_s=3600.0)
            record(log, 10)
            await drain(log)
            ids = [int(e[0].split(b"-")[0]) for e in client.xrange(DECISIONS_STREAM)]
            old_left = sum(ms < old_ms + 1000 for ms in ids)
            assert old_left < 100, old_left  # at most the part of a node shared with newer entries
            assert len(ids) - old_left == 10  # every new decision kept

            # bytes: a field over the cap is replaced by how long it was; the others are kept whole
            client.delete(DECISIONS_STREAM)
            log = DecisionLog(pipeline, maxlen=1000, max_field_bytes=512, trim_every_s=3600.0)
            big = {"customer_id": 7, "exclude_product_ids": list(range(1000, 1300))}
            record(log, 1, request=big)
            await drain(log)
            (_, fields), = client.xrange(DECISIONS_STREAM)
            marker = json.loads(fields[b"request"])
            assert marker == {"truncated_bytes": len(json.dumps(big, separators=(",", ":")))}
            assert json.loads(fields[b"items"]) == [{"product_id": 0}]
        finally:
            await pipeline.aclose()

    asyncio.run(run())


def test_each_customer_keeps_an_index_of_its_newest_decisions_with_the_logs_retention(settings):
    s = isolated(settings, 15)
    client = sync_client(s)

    async def run() -> None:
        pipeline = read_pipeline(s)
        try:
            log = DecisionLog(pipeline, maxlen=1000, retention_s=7 * 86400.0, trim_every_s=3600.0)
            record(log, DECISIONS_PER_CUSTOMER + 5, customer=42)
            await drain(log)
            record(log, 3)  # d0, d1, d2 of customers 0, 1, 2
            await drain(log)
        finally:
            await pipeline.aclose()

    asyncio.run(run())
    newest = [d.decode() for d in client.lrange(decisions_of(42), 0, -1)]
    assert newest == [f"d{i}" for i in reversed(range(5, DECISIONS_PER_CUSTOMER + 5))]  # newest first, bounded
    assert 7 * 86400 - 60 <= client.ttl(decisions_of(42)) <= 7 * 86400  # gone with the log's retention
    assert [client.lrange(decisions_of(c), 0, -1) for c in range(3)] == [[b"d0"], [b"d1"], [b"d2"]]
