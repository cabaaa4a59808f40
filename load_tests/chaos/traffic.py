"""The steady mixed load of a chaos run, open loop, in its own thread and event loop.

Answers: `answer_rps` requests/s in turn to /v1/recommendations, /v1/substitutions and /v1/next-best-action (bodies
with real ids from the dataset), latency from the scheduled send time (load_tests/bench/openloop.py's client).
Events: `batch_rps` batches/s of `batch_size` product_view events with unique ids, event time moving with the wall
clock from the stream's watermark. A batch that is not acknowledged (not 202, or no answer) is sent again, same
body, after ~1 s (the 503's Retry-After), as a producer would, until acknowledged or the run's drain deadline.
Every answer and every batch is recorded with the time it was scheduled.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlparse

import msgspec

from load_tests.bench.openloop import Conn
from load_tests.bench.serving import Requests

ANSWERS = ("/v1/recommendations", "/v1/substitutions", "/v1/next-best-action")
_CLIENT_ERRORS = (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError)
_json = msgspec.json.Encoder()


class Answer(msgspec.Struct, array_like=True):
    t: float  # scheduled, seconds since the run's t0
    path: int  # index in ANSWERS
    status: int  # HTTP status; 0 = no answer (connection error)
    latency_s: float
    fallback: str | None
    resent: bool = False  # its kept-alive connection died unanswered (a killed worker's): sent again on a new one


class Batch(msgspec.Struct):
    t: float  # first scheduled send
    ids: list[str]
    attempts: int = 0
    statuses: list[int] = msgspec.field(default_factory=list)
    acked_t: float | None = None
    duplicate: bool = False


@dataclass
class Traffic:
    base_url: str
    reqs: Requests
    watermark: float  # event time of the first events (epoch s)
    client_headers: dict[str, str]
    ingest_headers: dict[str, str]
    answer_rps: float = 300.0
    batch_rps: float = 10.0
    batch_size: int = 50
    answers: list[Answer] = field(default_factory=list)
    batches: list[Batch] = field(default_factory=list)
    run_id: str = field(default_factory=lambda: f"{int(time.time()):x}")
    t0: float = 0.0  # time.monotonic() of the start
    _stop: threading.Event = field(default_factory=threading.Event)
    _drain_until: float = 0.0
    _thread: threading.Thread | None = None

    def now(self) -> float:
        return time.monotonic() - self.t0

    def start(self) -> None:
        self.t0 = time.monotonic()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="chaos-traffic", daemon=True)
        self._thread.start()

    def stop(self, drain_s: float = 60.0) -> None:
        """Stop sending new requests; unacknowledged batches keep being retried for up to drain_s."""
        self._drain_until = self.now() + drain_s
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=drain_s + 30)

    async def _main(self) -> None:
        url = urlparse(self.base_url)
        idle: asyncio.Queue[Conn] = asyncio.Queue()
        for _ in range(64):
            idle.put_nowait(Conn(url.hostname, url.port, self.client_headers))
        event_conns: asyncio.Queue[Conn] = asyncio.Queue()
        for _ in range(16):
            event_conns.put_nowait(Conn(url.hostname, url.port, self.ingest_headers))
        makers = [self.reqs.recommendations, self.reqs.substitutions, self.reqs.next_best_action]
        loop = asyncio.get_running_loop()
        tasks: set[asyncio.Task] = set()

        def spawn(coro) -> None:
            task = loop.create_task(coro)
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        i_answer = i_batch = 0
        step = 1.0 / self.answer_rps
        per_batch = max(1, round(self.answer_rps / self.batch_rps))
        while not self._stop.is_set():
            scheduled = i_answer * step
            delay = scheduled - self.now()
            if delay > 0:
                await asyncio.sleep(delay)
            spawn(self._answer(idle, i_answer % 3, makers[i_answer % 3](), scheduled))
            if i_answer % per_batch == 0:
                spawn(self._batch(event_conns, self._events(i_batch), scheduled))
                i_batch += 1
            i_answer += 1
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _events(self, n: int) -> tuple[list[str], bytes]:
        rng = self.reqs.rng
        ids, events = [], []
        for k in range(self.batch_size):
            customer, store = rng.choice(self.reqs.pairs)
            event_id = f"chaos-{self.run_id}-{n}-{k}"
            ts = datetime.fromtimestamp(self.watermark + self.now(), UTC).isoformat()
            ids.append(event_id)
            events.append({"type": "product_view", "event_id": event_id, "ts": ts, "customer_id": customer,
                           "store_id": store, "product_id": rng.choice(self.reqs.products)})
        return ids, _json.encode({"events": events})

    async def _answer(self, idle: asyncio.Queue[Conn], path: int, body: bytes, scheduled: float) -> None:
        conn = await idle.get()
        status, fallback, resent = 0, None, False
        try:
            for attempt in (1, 2):
                reused = conn.writer is not None
                try:
                    status, payload = await conn.request(ANSWERS[path], body)
                except _CLIENT_ERRORS:
                    conn.close()
                    # what HTTP clients do with a pooled keep-alive connection that dies before any answer (the
                    # server process holding it was killed): send once more on a new connection; counted apart
                    if reused and attempt == 1:
                        resent = True
                        continue
                    break
                if status == 200:
                    fallback = msgspec.json.decode(payload).get("fallback")
                break
        finally:
            idle.put_nowait(conn)
        self.answers.append(Answer(scheduled, path, status, self.now() - scheduled, fallback, resent))

    async def _batch(self, conns: asyncio.Queue[Conn], made: tuple[list[str], bytes], scheduled: float) -> None:
        ids, body = made
        batch = Batch(scheduled, ids)
        self.batches.append(batch)
        while True:
            conn = await conns.get()
            batch.attempts += 1
            status = 0
            try:
                status, payload = await conn.request("/v1/events", body)
            except _CLIENT_ERRORS:
                conn.close()
            finally:
                conns.put_nowait(conn)
            batch.statuses.append(status)
            if status == 202:
                batch.acked_t = self.now()
                batch.duplicate = bool(msgspec.json.decode(payload).get("duplicate"))
                return
            if 400 <= status < 500 and status not in (408, 429):
                return  # refused for good: not acknowledged, not retried
            if self._stop.is_set() and self.now() > self._drain_until:
                return
            await asyncio.sleep(1.0 + random.random() * 0.2)  # the 503's Retry-After: 1
