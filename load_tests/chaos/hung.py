"""Answers while Redis is hung (SIGSTOP): each answer endpoint one request at a time, then concurrently (and the same
with Redis up first, for reference); then SIGCONT and how long until answers come without the store_unavailable
fallback again.

    python -m load_tests.chaos.hung http://127.0.0.1:8471 <redis-server pid> [n]   # by hand, prints the figures
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from urllib.parse import urlparse

import msgspec

from load_tests.bench.openloop import Conn, percentile
from load_tests.bench.serving import Requests

ANSWERS = ("/v1/recommendations", "/v1/substitutions", "/v1/next-best-action")


class HungFigures(msgspec.Struct, kw_only=True):
    endpoint: str
    mode: str  # "sequential" or "concurrent N"
    requests: int
    ok: int
    fallback: int  # 200 with a fallback
    errors: dict[str, int]
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None


def bodies(reqs: Requests):
    return {"/v1/recommendations": reqs.recommendations, "/v1/substitutions": reqs.substitutions,
            "/v1/next-best-action": reqs.next_best_action}


async def _one(conn: Conn, path: str, body: bytes, out: list, errors: dict) -> None:
    start = time.perf_counter()
    try:
        status, payload = await conn.request(path, body)
    except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError) as exc:
        errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
        conn.close()
        return
    took = time.perf_counter() - start
    if status != 200:
        errors[str(status)] = errors.get(str(status), 0) + 1
        return
    fallback = msgspec.json.decode(payload).get("fallback")
    out.append((took, fallback))


async def measure(base_url: str, path: str, make, n: int, concurrency: int, headers: dict[str, str]) -> HungFigures:
    url = urlparse(base_url)
    conns = [Conn(url.hostname, url.port, headers) for _ in range(concurrency)]
    out: list = []
    errors: dict[str, int] = {}
    per = n // concurrency

    async def worker(conn: Conn) -> None:
        for _ in range(per):
            await _one(conn, path, make(), out, errors)

    await asyncio.gather(*(worker(c) for c in conns))
    for c in conns:
        c.close()
    lat = [t for t, _ in out]

    def ms(v: float | None) -> float | None:
        return None if v is None else round(v * 1000, 1)

    return HungFigures(endpoint=path, mode="sequential" if concurrency == 1 else f"concurrent {concurrency}",
                       requests=per * concurrency, ok=len(out), fallback=sum(1 for _, f in out if f),
                       errors=errors, p50_ms=ms(percentile(lat, 0.5)), p99_ms=ms(percentile(lat, 0.99)),
                       max_ms=ms(max(lat, default=None)))


async def until_normal(base_url: str, make, headers: dict[str, str], timeout_s: float = 30.0) -> float | None:
    """Seconds until a recommendation comes back without the store_unavailable fallback (None: not within timeout)."""
    url = urlparse(base_url)
    conn = Conn(url.hostname, url.port, headers)
    start = time.perf_counter()
    try:
        while time.perf_counter() - start < timeout_s:
            try:
                status, payload = await conn.request("/v1/recommendations", make())
                if status == 200 and msgspec.json.decode(payload).get("fallback") != "store_unavailable":
                    return time.perf_counter() - start
            except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError):
                conn.close()
            await asyncio.sleep(0.05)
        return None
    finally:
        conn.close()


async def run(base_url: str, redis_pid: int, reqs: Requests, headers: dict[str, str], n: int = 200,
              concurrency: int = 16) -> tuple[list[HungFigures], float | None]:
    made = bodies(reqs)
    # warm every worker's connections and caches first
    for path, make in made.items():
        await measure(base_url, path, make, 32, 8, headers)
    figures: list[HungFigures] = []
    for path, make in made.items():  # the same with Redis up: what the machine gives without the fault
        for conns in (1, concurrency):
            figure = await measure(base_url, path, make, n, conns, headers)
            figure.mode += ", Redis up"
            figures.append(figure)
    os.kill(redis_pid, signal.SIGSTOP)
    try:
        for path, make in made.items():
            figures.append(await measure(base_url, path, make, n, 1, headers))
            figures.append(await measure(base_url, path, make, n, concurrency, headers))
    finally:
        os.kill(redis_pid, signal.SIGCONT)
    recovered = await until_normal(base_url, made["/v1/recommendations"], headers)
    return figures, recovered


if __name__ == "__main__":
    from load_tests.keys import headers_for
    from pantry.settings import get_settings

    settings = get_settings()  # PANTRY_CLIENT_KEY: `source .pantry/demo-keys.env` (or the data dir's) first
    figs, back = asyncio.run(run(sys.argv[1], int(sys.argv[2]), Requests(settings),
                                 headers_for(settings, "/v1/recommendations"),
                                 int(sys.argv[3]) if len(sys.argv) > 3 else 200))
    for f in figs:
        print(msgspec.json.encode(f).decode())
    print(f"normal answers {back} s after SIGCONT")
