"""Question: how much CPU does one POST /v1/events of 300 impressions cost a worker's event loop?

Command: `.venv/bin/python -m experiments.ingest_cpu` after `make bench` has built `.pantry/bench` (its registry and
keys; an embedded Redis of its own on a free port, started and stopped here). The Litestar app is called directly
as ASGI (no HTTP server, no client in the process), and process time per request is the median of three runs of
N (300) requests, each a new batch of SIZE (300) impressions: what the experiment-overhead part of `make bench`
posts every 0.1 s (~3,000 outcome events/s at 300 answers/s). `PYTHONPATH=<other checkout>` runs another version.
Result: see docs/DECISIONS.md, "Why does the experiment-overhead part post its outcomes from a process of its own?".
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from pathlib import Path

BENCH = Path(".pantry/bench").resolve()
N = int(os.environ.get("N", "300"))
SIZE = int(os.environ.get("SIZE", "300"))


def _body(k: int) -> bytes:
    import msgspec

    return msgspec.json.encode({"events": [
        {"type": "impression", "event_id": f"cpu-{os.getpid()}-{k}-{i}", "product_id": 1_000_000 + i,
         "ts": "2017-06-01T12:00:00Z", "customer_id": 1234, "decision_id": f"{k:032x}"} for i in range(SIZE)]})


async def _post(app, body: bytes, key: str) -> None:
    headers = [(b"host", b"x"), (b"content-type", b"application/json"), (b"x-api-key", key.encode()),
               (b"content-length", str(len(body)).encode())]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/events", "raw_path": b"/v1/events", "query_string": b"", "root_path": "",
             "headers": headers, "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "state": {}}
    sent = False

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)

    out: list[dict] = []

    async def send(message):
        out.append(message)

    await app(scope, receive, send)
    if out[0]["status"] != 202:
        raise RuntimeError(f"{out[0]['status']}: {out[1].get('body', b'')[:300]!r}")


async def _measure(app, key: str) -> list[float]:
    queue: asyncio.Queue = asyncio.Queue()
    started = asyncio.Event()
    await queue.put({"type": "lifespan.startup"})

    async def lifespan_send(message):
        if message["type"] == "lifespan.startup.complete":
            started.set()

    lifespan = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                                       queue.get, lifespan_send))
    await started.wait()
    bodies = [_body(k) for k in range(N * 4)]
    for body in bodies[:50]:  # warm: connections, the registered script
        await _post(app, body, key)
    runs = []
    for rep in range(1, 4):
        start = time.process_time()
        for body in bodies[rep * N:(rep + 1) * N]:
            await _post(app, body, key)
        runs.append((time.process_time() - start) / N * 1e3)
    await queue.put({"type": "lifespan.shutdown"})
    await lifespan
    return runs


def main() -> None:
    os.environ.update({"PANTRY_DATA_DIR": str(BENCH), "PANTRY_ARTIFACTS_DIR": str(BENCH / "artifacts"),
                       "PANTRY_ACCESS_LOG": "off", "PANTRY_RATE_LIMIT_PER_MINUTE": "0", "PANTRY_CLOCK": "event"})
    from pantry.redis_server import EmbeddedRedis, free_port

    port = free_port()
    os.environ["PANTRY_REDIS_PORT"] = str(port)
    from load_tests.keys import key_for, with_run_key
    from pantry.settings import get_settings
    from serving.app import create_app

    settings = with_run_key(get_settings())
    redis = EmbeddedRedis(port=port, directory=settings.redis_dir).start(daemonize=False)
    try:
        runs = asyncio.run(_measure(create_app(settings), key_for(settings, "/v1/events")))
    finally:
        redis.stop()
    print(f"POST /v1/events, {SIZE} impressions: {statistics.median(runs):.3f} ms of CPU per request "
          f"(runs: {', '.join(f'{r:.3f}' for r in runs)})")


if __name__ == "__main__":
    main()
