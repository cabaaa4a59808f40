"""The bench's HTTP load client: open loop at a fixed rate, and closed loop for saturation.

Open loop: request i is due at t0 + i/rate whatever happened to the others, and its latency counts from that
scheduled time, so a stalled server (or a client waiting for a free connection) shows up as latency instead of
silently lowering the rate (no coordinated omission). Closed loop: N connections each send the next request when
the last one is answered: the throughput the service sustains, with the latency that costs.
The client is a minimal asyncio HTTP/1.1 keep-alive client: httpx or Locust would saturate a core before a 2-core
server does.
Both run with the client's garbage collector held off (`collector_held`): a full collection of the bench process's
heap (its request pools, the earlier parts' results) took 30-60 ms and showed up as a server stall in whichever
round it fell (docs/DECISIONS.md "The load generator's garbage collector").
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import urlparse

from load_tests.bench.figures import Load

_CLIENT_ERRORS = (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError)


class Conn:
    """One keep-alive connection; (re)connects on first use after a failure."""

    def __init__(self, host: str, port: int, headers: dict[str, str] | None = None):
        self.host, self.port = host, port
        self.extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> int:
        return (await self.request(path, body))[0]

    async def request(self, path: str, body: bytes) -> tuple[int, bytes]:
        """POST, then the status and the body of the answer."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n{self.extra}"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        self.writer.write(head + body)
        status_line = await self.reader.readline()
        if not status_line:
            self.close()
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
        payload = b""
        if chunked:
            while True:
                size = int((await self.reader.readline()).strip(), 16)
                payload += (await self.reader.readexactly(size + 2))[:size]
                if size == 0:
                    break
        elif length:
            payload = await self.reader.readexactly(length)
        return int(status_line.split()[1]), payload

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarize(latencies_s: list[float], errors: int, duration_s: float, sent: int,
              error_statuses: dict[int, int] | None = None) -> Load:
    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 2)

    return Load(requests=sent, errors=errors, achieved_rps=round(len(latencies_s) / duration_s, 1),
                p50_ms=ms(percentile(latencies_s, 0.50)), p99_ms=ms(percentile(latencies_s, 0.99)),
                max_ms=ms(max(latencies_s, default=None)), error_statuses=error_statuses or {})


@contextmanager
def collector_held() -> Iterator[None]:
    """No collection in the client while it times requests: what exists now is collected once and frozen out of
    later collections, the collector is off for the timed window (seconds: what it allocates meanwhile is
    bounded by the requests it sends) and collects again afterwards."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


async def open_loop(base_url: str, path: str, bodies: Callable[[], bytes], rate: float, duration_s: float,
                    max_conns: int = 64, api_key: str | None = None,
                    on_answer: Callable[[bytes, bytes], None] | None = None) -> Load:
    """`on_answer(body, answer)` sees every successful request's body and answer (after its latency is taken)."""
    url = urlparse(base_url)
    idle: asyncio.Queue[Conn] = asyncio.Queue()
    for _ in range(max_conns):
        idle.put_nowait(Conn(url.hostname, url.port, {"X-API-Key": api_key} if api_key else None))
    latencies: list[float] = []
    errors = 0
    statuses: dict[int, int] = {}
    n = int(rate * duration_s)
    loop = asyncio.get_running_loop()

    async def one(scheduled: float, body: bytes) -> None:
        nonlocal errors
        conn = await idle.get()  # waiting for a free connection counts as latency (measured from `scheduled`)
        try:
            status, answer = await conn.request(path, body)
            if status >= 400:
                errors += 1
                statuses[status] = statuses.get(status, 0) + 1
            else:
                latencies.append(loop.time() - scheduled)
                if on_answer is not None:
                    on_answer(body, answer)
        except _CLIENT_ERRORS:
            errors += 1
            conn.close()
        finally:
            idle.put_nowait(conn)

    tasks = []
    with collector_held():
        t0 = loop.time() + 0.05
        for i in range(n):
            scheduled = t0 + i / rate
            delay = scheduled - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(scheduled, bodies())))
        await asyncio.gather(*tasks)
    while not idle.empty():
        idle.get_nowait().close()
    return summarize(latencies, errors, duration_s, n, statuses)


async def closed_loop(base_url: str, path: str, bodies: Callable[[], bytes], connections: int,
                      duration_s: float, api_key: str | None = None) -> Load:
    url = urlparse(base_url)
    latencies: list[float] = []
    errors = 0
    statuses: dict[int, int] = {}
    sent = 0
    loop = asyncio.get_running_loop()

    async def worker() -> None:
        nonlocal errors, sent
        conn = Conn(url.hostname, url.port, {"X-API-Key": api_key} if api_key else None)
        while loop.time() < end:
            start = loop.time()
            sent += 1
            try:
                status = await conn.post(path, bodies())
                if status >= 400:
                    errors += 1
                    statuses[status] = statuses.get(status, 0) + 1
                else:
                    latencies.append(loop.time() - start)
            except _CLIENT_ERRORS:
                errors += 1
                conn.close()
        conn.close()

    with collector_held():
        started = loop.time()
        end = started + duration_s
        await asyncio.gather(*(worker() for _ in range(connections)))
    return summarize(latencies, errors, loop.time() - started, sent, statuses)
