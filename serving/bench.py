"""Serving benchmark: `run_bench(settings, base_url) -> dict` (called by `make bench`'s harness, or by hand).

Open-loop at a fixed rate: requests are scheduled at t0 + i/rate and latency counts from the SCHEDULED send time,
so a stalled server shows up as latency (no coordinated omission). Saturation: closed loop with many connections.
The client is a minimal asyncio HTTP/1.1 keep-alive client (httpx would saturate before the server does on 2 cores).

Measured: p50/p99 at 300 req/s and max throughput for the three model endpoints; /v1/features vs `feast serve`
(started here on the same Redis and registry) on the same requests; a Litestar hello-world ceiling.

    python -m serving.bench http://127.0.0.1:8000      # against a running `pantry serve`
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import msgspec

from pantry import feast_repo
from pantry.redis_server import free_port
from pantry.settings import Settings

RATE = 300.0
STEP_S = 6.0
SATURATION_CONNECTIONS = 48
_json = msgspec.json.Encoder()


# ---- a tiny HTTP/1.1 client ------------------------------------------------------------------------------------


class Conn:
    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, path: str, body: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        self.writer.write(head + body)
        status_line = await self.reader.readline()
        if not status_line:
            self.writer = None
            raise ConnectionError("closed")
        length = 0
        chunked = False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value:
                chunked = True
        if chunked:
            while True:
                size = int((await self.reader.readline()).strip(), 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        elif length:
            await self.reader.readexactly(length)
        return int(status_line.split()[1])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def _summary(latencies: list[float], errors: int, duration: float, sent: int) -> dict:
    return {
        "requests": sent,
        "errors": errors,
        "achieved_rps": round(len(latencies) / duration, 1),
        "p50_ms": round(_percentile(latencies, 0.50) * 1000, 2) if latencies else None,
        "p99_ms": round(_percentile(latencies, 0.99) * 1000, 2) if latencies else None,
        "max_ms": round(max(latencies) * 1000, 2) if latencies else None,
    }


async def open_loop(base_url: str, path: str, bodies: Callable[[], bytes], rate: float, duration_s: float,
                    max_conns: int = 64) -> dict:
    url = urlparse(base_url)
    idle: asyncio.Queue[Conn] = asyncio.Queue()
    for _ in range(max_conns):
        idle.put_nowait(Conn(url.hostname, url.port))
    latencies: list[float] = []
    errors = 0
    n = int(rate * duration_s)
    loop = asyncio.get_running_loop()
    t0 = loop.time() + 0.05

    async def one(scheduled: float, body: bytes) -> None:
        nonlocal errors
        conn = await idle.get()  # waiting for a free connection counts as latency (measured from `scheduled`)
        try:
            status = await conn.request(path, body)
            if status >= 400:
                errors += 1
            else:
                latencies.append(loop.time() - scheduled)
        except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError):
            errors += 1
            conn.close()
            conn.writer = None
        finally:
            idle.put_nowait(conn)

    tasks = []
    for i in range(n):
        scheduled = t0 + i / rate
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled, bodies())))
    await asyncio.gather(*tasks)
    while not idle.empty():
        idle.get_nowait().close()
    return _summary(latencies, errors, duration_s, n) | {"target_rps": rate}


async def closed_loop(base_url: str, path: str, bodies: Callable[[], bytes], connections: int,
                      duration_s: float) -> dict:
    url = urlparse(base_url)
    latencies: list[float] = []
    errors = 0
    error_statuses: dict[int, int] = {}
    sent = 0
    loop = asyncio.get_running_loop()
    end = loop.time() + duration_s

    async def worker() -> None:
        nonlocal errors, sent
        conn = Conn(url.hostname, url.port)
        while loop.time() < end:
            start = loop.time()
            sent += 1
            try:
                status = await conn.request(path, bodies())
                if status >= 400:
                    errors += 1
                    error_statuses[status] = error_statuses.get(status, 0) + 1
                else:
                    latencies.append(loop.time() - start)
            except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError):
                errors += 1
                conn.close()
                conn = Conn(url.hostname, url.port)
        conn.close()

    started = loop.time()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return _summary(latencies, errors, loop.time() - started, sent) | {"error_statuses": error_statuses}


# ---- request bodies from the dataset ---------------------------------------------------------------------------


class Requests:
    def __init__(self, settings: Settings, seed: int = 7):
        from pantry import dataset

        events = dataset.read_events(settings, columns=["customer_id", "store_id", "product_id"]).to_pandas()
        events = events.dropna()
        self.rng = random.Random(seed)
        self.customers = events["customer_id"].astype(int).unique().tolist()
        self.stores = events["store_id"].astype(int).unique().tolist()
        self.products = events["product_id"].astype(int).unique().tolist()
        self.pairs = list(zip(events["customer_id"].astype(int), events["store_id"].astype(int), strict=True))

    def recommendations(self) -> bytes:
        customer, store = self.rng.choice(self.pairs)
        return _json.encode({"customer_id": customer, "store_id": store, "k": 10, "surface": "for_you"})

    def substitutions(self) -> bytes:
        customer, store = self.rng.choice(self.pairs)
        return _json.encode({"customer_id": customer, "store_id": store,
                             "product_ids": self.rng.sample(self.products, 3), "k": 3})

    def next_best_action(self) -> bytes:
        return _json.encode({"customer_id": self.rng.choice(self.customers), "channel": "app", "k": 3})

    def features(self) -> bytes:
        return _json.encode({"feature_service": "recommendations_v1",
                             "entities": {"customer_id": [self.rng.choice(self.customers)],
                                          "store_id": [self.rng.choice(self.stores)]}})


# ---- peers -----------------------------------------------------------------------------------------------------


@contextmanager
def _process(cmd: list[str], env: dict[str, str], url: str, health: str, log: Path,
             timeout_s: float = 90.0) -> Iterator[str]:
    import httpx

    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd[0]} exited: {log.read_text()[-500:]}")
            try:
                if httpx.get(url + health, timeout=1).status_code < 500:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{cmd[0]} did not start in {timeout_s:.0f} s")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def feast_serve(settings: Settings, log: Path, workers: int) -> contextmanager:
    port = free_port()
    cmd = feast_repo.feast_command(settings, "serve", "-h", "127.0.0.1", "-p", str(port), "-w", str(workers),
                                   "--no-access-log")
    return _process(cmd, feast_repo.subprocess_env(settings), f"http://127.0.0.1:{port}", "/health", log)


_HELLO = '''
import msgspec
from litestar import Litestar, post, get

class Hello(msgspec.Struct):
    hello: str

@post("/hello", status_code=200)
async def hello() -> Hello:
    return Hello("world")

@get("/healthz")
async def healthz() -> Hello:
    return Hello("ok")

app = Litestar([hello, healthz], openapi_config=None)
'''


def hello_world(work: Path, workers: int) -> contextmanager:
    (work / "pantry_bench_hello.py").write_text(_HELLO)
    port = free_port()
    granian = str(Path(sys.executable).with_name("granian"))
    cmd = [granian, "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
           "--no-ws", "--working-dir", str(work), "pantry_bench_hello:app"]
    return _process(cmd, dict(os.environ), f"http://127.0.0.1:{port}", "/healthz", work / "hello.log")


# ---- the benchmark ---------------------------------------------------------------------------------------------


def run_bench(settings: Settings, base_url: str | None = None, step_s: float = STEP_S) -> dict:
    base_url = base_url or f"http://{settings.host}:{settings.port}"
    work = settings.data_dir / "serving-bench"
    work.mkdir(parents=True, exist_ok=True)
    reqs = Requests(settings)
    endpoints = {
        "recommendations": ("/v1/recommendations", reqs.recommendations),
        "substitutions": ("/v1/substitutions", reqs.substitutions),
        "next_best_action": ("/v1/next-best-action", reqs.next_best_action),
        "features": ("/v1/features", reqs.features),
    }
    out: dict = {"base_url": base_url, "step_s": step_s, "client": "asyncio HTTP/1.1 keep-alive, same machine"}

    async def measure_all() -> None:
        for name, (path, bodies) in endpoints.items():
            await closed_loop(base_url, path, bodies, 8, 1.0)  # warm-up, not reported
            out[f"{name}.at_{RATE:g}rps"] = await open_loop(base_url, path, bodies, RATE, step_s)
            out[f"{name}.saturation"] = await closed_loop(base_url, path, bodies, SATURATION_CONNECTIONS, step_s)
            print(f"serving bench {name}: {out[f'{name}.at_{RATE:g}rps']} | {out[f'{name}.saturation']}",
                  flush=True)

    asyncio.run(measure_all())

    def feast_body() -> bytes:
        return reqs.features()

    try:
        with feast_serve(settings, work / "feast_serve.log", settings.workers) as url:

            async def feast() -> None:
                await closed_loop(url, "/get-online-features", feast_body, 4, 2.0)
                out["feast_serve.saturation"] = await closed_loop(url, "/get-online-features", feast_body,
                                                                  SATURATION_CONNECTIONS, step_s)

            asyncio.run(feast())
            print(f"serving bench feast serve: {out['feast_serve.saturation']}", flush=True)
    except RuntimeError as exc:
        out["feast_serve.saturation"] = f"not run ({exc})"
    try:
        with hello_world(work, settings.workers) as url:
            out["hello_world.saturation"] = asyncio.run(
                closed_loop(url, "/hello", lambda: b"{}", SATURATION_CONNECTIONS, step_s))
            print(f"serving bench hello-world: {out['hello_world.saturation']}", flush=True)
    except RuntimeError as exc:
        out["hello_world.saturation"] = f"not run ({exc})"
    feast = out.get("feast_serve.saturation")
    if isinstance(feast, dict) and feast.get("achieved_rps"):
        out["features_vs_feast_serve.throughput_x"] = round(
            out["features.saturation"]["achieved_rps"] / feast["achieved_rps"], 1)
    return out


if __name__ == "__main__":
    from pantry.settings import get_settings

    result = run_bench(get_settings(), sys.argv[1] if len(sys.argv) > 1 else None)
    print(msgspec.json.format(msgspec.json.encode(result)).decode())
