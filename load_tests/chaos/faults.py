"""The faults of a chaos run, each applied once to the running stack under the steady load, and what each cost.

A fault has a window (from when it is applied until it is lifted: SIGCONT, or the instant of a kill, or the end
of the hostile burst), then a watch: recovered = the first moment after the lift from which `CLEAN_S` seconds of
answers are all 200 without the `store_unavailable` fallback within SLOW_S, every batch sent in them acknowledged,
and the product's processes back (Redis answering, a live flow, every serving worker). What is not restarted by the
product within `RESTART_WAIT_S` is restarted by the harness (as an operator would) and said so in the row; when
`pantry demo` itself exited, the harness runs it again (the row's recovery then includes that restart).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import Callable

import msgspec

from load_tests.bench.openloop import percentile
from load_tests.chaos.stack import Stack, wait_for
from load_tests.chaos.traffic import Traffic

STOP_S = 10.0
RESTART_WAIT_S = 15.0
CLEAN_S = 2.0
SLOW_S = 0.5  # an answer later than this (from its scheduled time) is not clean: the service is still catching up
WATCH_S = 45.0
HOSTILE_EVENTS = 10_000


class FaultRow(msgspec.Struct, kw_only=True):
    name: str
    start_t: float
    lifted_t: float
    end_t: float = 0.0
    answers: int = 0
    answers_ok: int = 0  # 200 without fallback
    answers_fallback: int = 0  # 200 with a fallback
    answers_5xx: int = 0
    answers_no_reply: int = 0  # connection refused/reset, no HTTP answer (after the one resend below)
    answers_resent: int = 0  # kept-alive connection lost unanswered (a killed worker's), sent again on a new one
    answers_other: int = 0  # other statuses
    p99_ms: float | None = None  # answers scheduled in the fault window
    events_acked: int = 0  # events of batches first sent in the window, acknowledged by the end of the run
    events_5xx: int = 0  # event posts answered 5xx in the window (then retried)
    recovery_s: float | None = None  # from the lift to recovered; None: not within the watch
    lost_events: int = 0  # acknowledged (batches first sent in this fault's span), not in the stream
    notes: list[str] = msgspec.field(default_factory=list)


def _processes_back(stack: Stack, workers: int) -> bool:
    return stack.redis_pid() is not None and bool(stack.flow_pids()) and len(stack.worker_pids()) >= workers


def clean_from(traffic: Traffic, since: float, until: float) -> float | None:
    """When the traffic of [since, until) became clean for good: the scheduled time of its last bad answer (not 200,
    the store_unavailable fallback, or later than SLOW_S) or batch (not acknowledged at the first attempt), else
    `since`; None when less than CLEAN_S seconds of clean traffic follow it."""
    answers = [a for a in list(traffic.answers) if since <= a.t < until]
    batches = [b for b in list(traffic.batches) if since <= b.t < until]
    bad = [a.t for a in answers if a.status != 200 or a.fallback == "store_unavailable" or a.latency_s > SLOW_S]
    bad += [b.t for b in batches if b.statuses[:1] != [202]]
    last = max(bad, default=since)
    return last if until - last >= CLEAN_S and any(a.t > last for a in answers) else None


def measure(row: FaultRow, traffic: Traffic) -> None:
    window = [a for a in list(traffic.answers) if row.start_t <= a.t < row.end_t]
    row.answers = len(window)
    row.answers_ok = sum(1 for a in window if a.status == 200 and a.fallback is None)
    row.answers_fallback = sum(1 for a in window if a.status == 200 and a.fallback is not None)
    row.answers_5xx = sum(1 for a in window if a.status >= 500)
    row.answers_no_reply = sum(1 for a in window if a.status == 0)
    row.answers_resent = sum(1 for a in window if a.resent)
    row.answers_other = row.answers - row.answers_ok - row.answers_fallback - row.answers_5xx - row.answers_no_reply
    during = [a.latency_s for a in window if a.t < max(row.lifted_t, row.start_t + 1.0) and a.status == 200]
    p99 = percentile(during, 0.99)
    row.p99_ms = None if p99 is None else round(p99 * 1000, 1)
    batches = [b for b in list(traffic.batches) if row.start_t <= b.t < row.end_t]
    row.events_acked = sum(len(b.ids) for b in batches if b.acked_t is not None)
    row.events_5xx = sum(1 for b in batches for s in b.statuses if s >= 500)


def watch(row: FaultRow, stack: Stack, traffic: Traffic, workers: int) -> None:
    """Wait until recovered (or WATCH_S), then fill the row."""
    deadline = time.monotonic() + WATCH_S
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = traffic.now()
        found = clean_from(traffic, row.lifted_t, now - 0.5)  # answers of the last 0.5 s may still be in flight
        if found is not None and _processes_back(stack, workers):
            row.recovery_s = round(found - row.lifted_t, 2)
            break
    else:
        if not _processes_back(stack, workers):
            row.notes.append(f"not back after {WATCH_S:.0f} s: redis {stack.redis_pid() is not None}, "
                             f"live flow {bool(stack.flow_pids())}, workers {len(stack.worker_pids())}/{workers}")
    row.end_t = traffic.now()
    measure(row, traffic)


# ---- the faults ------------------------------------------------------------------------------------------------


def redis_sigkill(stack: Stack, traffic: Traffic, row: FaultRow) -> None:
    pid = stack.redis_pid()
    os.kill(pid, signal.SIGKILL)
    row.lifted_t = traffic.now()
    back = wait_for(lambda: stack.redis_pid() not in (None, pid), RESTART_WAIT_S)
    if back is None:
        row.notes.append(f"the product did not restart Redis within {RESTART_WAIT_S:.0f} s")
        if stack.demo_alive():
            row.notes.append("restarted by the harness")
            stack.restart_redis()
    else:
        row.notes.append(f"Redis restarted by the product after {back:.1f} s")


def redis_sigstop(stack: Stack, traffic: Traffic, row: FaultRow) -> None:
    pid = stack.redis_pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(STOP_S)
    finally:
        os.kill(pid, signal.SIGCONT)
    row.lifted_t = traffic.now()


def flow_sigkill(stack: Stack, traffic: Traffic, row: FaultRow) -> None:
    pids = stack.flow_pids()
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    row.lifted_t = traffic.now()
    back = wait_for(lambda: bool(set(stack.flow_pids()) - set(pids)), RESTART_WAIT_S)
    if back is None:
        row.notes.append(f"the product did not restart the live flow within {RESTART_WAIT_S:.0f} s")
        if stack.demo_alive():
            row.notes.append("restarted by the harness")
            stack.restart_flow()
    else:
        row.notes.append(f"live flow restarted by the product after {back:.1f} s")


def worker_sigkill(stack: Stack, traffic: Traffic, row: FaultRow) -> None:
    pids = stack.worker_pids()
    victim = pids[0]
    os.kill(victim, signal.SIGKILL)
    row.lifted_t = traffic.now()
    back = wait_for(lambda: len(set(stack.worker_pids()) - {victim}) >= len(pids), RESTART_WAIT_S)
    row.notes.append(f"serving worker respawned after {back:.1f} s" if back is not None else
                     f"serving worker not respawned within {RESTART_WAIT_S:.0f} s ({len(stack.worker_pids())} of "
                     f"{len(pids)} left)")


HOSTILE_KINDS = ("2^64 ids", "ts in 2999", "1e308 values", "oversized (2 MiB)", "garbage JSON", "random fields")


def hostile_bodies(n_events: int, rng: random.Random, run_id: str) -> list[tuple[str, bytes]]:
    """Batches of hostile events (100 per batch): oversized, future ts, 1e308, 2^64 ids, garbage JSON, random."""
    enc = msgspec.json.Encoder()
    base = {"type": "product_view", "ts": "2018-01-01T00:00:00+00:00", "customer_id": 1, "store_id": 1,
            "product_id": 1}
    kinds: list[Callable[[int], bytes]] = [
        lambda i: enc.encode({"events": [{**base, "event_id": f"h-{run_id}-{i}-{k}", "product_id": 2**64}
                                         for k in range(100)]}),
        lambda i: enc.encode({"events": [{**base, "event_id": f"h-{run_id}-{i}-{k}", "ts": "2999-01-01T00:00:00Z"}
                                         for k in range(100)]}),
        lambda i: enc.encode({"events": [{**base, "type": "purchase", "event_id": f"h-{run_id}-{i}-{k}",
                                          "quantity": 1e308, "sales_value": 1e308, "basket_id": 2**64 - 1}
                                         for k in range(100)]}),
        lambda i: enc.encode({"events": [{**base, "event_id": "x" * 20_000} for _ in range(100)]}),  # oversized
        lambda i: b'{"events": [' + rng.randbytes(2000).replace(b"\x00", b"{") + b"]",  # garbage JSON
        lambda i: enc.encode({"events": [{rng.choice(["type", "ts", "event_id", "x"]): rng.random()}
                                         for _ in range(100)]}),  # random
    ]
    return [(HOSTILE_KINDS[i % len(kinds)], kinds[i % len(kinds)](i)) for i in range(n_events // 100)]


def hostile_burst(stack: Stack, traffic: Traffic, row: FaultRow) -> None:
    from load_tests.bench.openloop import Conn

    bodies = hostile_bodies(HOSTILE_EVENTS, random.Random(11), traffic.run_id)
    statuses: dict[tuple[str, int], int] = {}
    url = stack.base_url.split("//")[1]
    host, port = url.split(":")

    async def send() -> None:
        queue = list(bodies)

        async def worker() -> None:
            conn = Conn(host, int(port), traffic.ingest_headers)
            while queue:
                kind, body = queue.pop()
                try:
                    status, _ = await conn.request("/v1/events", body)
                    if status == 413:
                        conn.close()  # the server refused before reading the body and closes the connection
                except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError):
                    status = 0
                    conn.close()
                statuses[(kind, status)] = statuses.get((kind, status), 0) + 1
            conn.close()

        await asyncio.gather(*(worker() for _ in range(8)))

    asyncio.run(send())
    row.lifted_t = traffic.now()
    row.notes.append("hostile batches (100 events each) answered: " + ", ".join(
        f"{kind} {status or 'closed without reply'} x{n}" for (kind, status), n in sorted(statuses.items())))
    if any(s >= 500 or (s == 0 and not kind.startswith("oversized")) for kind, s in statuses):
        row.notes.append("**hostile input got a 5xx or no reply**")


# the hostile burst last: events it gets accepted (a ts in 2999) would move the event clock under the other rows
FAULTS: list[tuple[str, Callable[[Stack, Traffic, FaultRow], None]]] = [
    (f"SIGSTOP Redis {STOP_S:.0f} s", redis_sigstop),
    ("SIGKILL one serving worker", worker_sigkill),
    ("SIGKILL Redis", redis_sigkill),
    ("SIGKILL the live dataflow", flow_sigkill),
    ("hostile burst (10,000 events)", hostile_burst),
]


def apply(name: str, fn, stack: Stack, traffic: Traffic, workers: int) -> FaultRow:
    row = FaultRow(name=name, start_t=traffic.now(), lifted_t=0.0)
    try:
        fn(stack, traffic, row)
    except Exception as exc:  # a fault that could not be applied is reported, the run goes on
        row.notes.append(f"harness error: {type(exc).__name__}: {exc}")
        row.lifted_t = row.lifted_t or traffic.now()
    restart_if_exited(stack, row)
    watch(row, stack, traffic, workers)
    return row


def restart_if_exited(stack: Stack, row: FaultRow, when: str = "") -> None:
    """`pantry demo` stops everything when one of its children dies: what an operator does is start it again."""
    if stack.demo_alive():
        return
    row.notes.append(f"**`pantry demo` exited{when}**: started again by the harness")
    started = time.monotonic()
    stack.start()
    row.notes.append(f"serving again {time.monotonic() - started:.0f} s later")



