"""What the closed loop costs an answer (a `make bench` target): /v1/recommendations p99 at 300 req/s with an
experiment running and outcomes streaming in, against the same load without them, in the same run.

A with-round: an experiment (the ACTIVE recommender against its popularity baseline, share 0.5, created and stopped
through /admin/experiments) and, for every answer, an impression of the answer (counted by the join for each shown
item; PER_ITEM_IMPRESSIONS posts one per item) and a click on the first item of one answer in CLICK_EVERY, POSTed to
/v1/events every OUTCOME_FLUSH_S by a process of their own, as a storefront's outcome reports are a client apart
from its shoppers' requests (about 330 events/s at 300 answers/s, 3,000 per item; the live flow joins them to the
decision log); it starts once every worker has loaded and warmed the treatment (the
experiment's start-up, not its running cost). A without-round: the same open loop, no experiment, no outcomes. The
bench's `pantry serve` runs without its live flow (the serving figures are the API alone), so this part starts
`pantry stream live` itself for all its rounds (after its start-up work has settled: `settled`): idle in a
without-round, joining outcomes in a with-round. Rounds
alternate (without, with, ...) so a drift of the machine over the run hits both sides; the target compares the
median of each side's p99s.

Run by serving.py after the endpoints (`python -m load_tests.bench.serving URL` against a running pantry, with
PANTRY_CLIENT_KEY, PANTRY_INGEST_KEY and PANTRY_BENCH_ML_ENGINEER_KEY set).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection

import httpx
import msgspec

from load_tests.bench.figures import ExperimentOverhead, Load
from load_tests.bench.openloop import closed_loop, open_loop
from load_tests.keys import key_for
from load_tests.server import pantry_command, stop_group
from pantry.health import live_flow
from pantry.keys import LIVE_HEARTBEAT
from pantry.redis_server import sync_client
from pantry.settings import Settings, subprocess_env
from streaming.sources import REFRESH_EVERY_S

# rounds of each kind, and their length: a 6-s round's p99 (1,800 requests, the 18th slowest) moves by +-10% from
# round to round, as much as the 10% the target allows: the median of 5 such rounds gave 0.99x and 1.10x in two
# `make bench` runs of the same code; 7 rounds of 10 s (3,000 requests each) narrow that spread in both directions
# (docs/DECISIONS.md "The load generator's garbage collector")
ROUNDS = int(os.environ.get("PANTRY_BENCH_OVERHEAD_ROUNDS", "7"))
ROUND_S = float(os.environ.get("PANTRY_BENCH_OVERHEAD_ROUND_S", "10"))
OUTCOME_FLUSH_S = 0.1
CLICK_EVERY = 10
# One impression per answer shown (no product_id: the join counts each of its items), as a storefront reports a list
# view; PANTRY_BENCH_OVERHEAD_IMPRESSIONS=item posts one per shown item instead (ten times the events)
PER_ITEM_IMPRESSIONS = os.environ.get("PANTRY_BENCH_OVERHEAD_IMPRESSIONS", "answer") == "item"
FLOW_SETTLED_S, FLOW_SETTLED_CPU = 3, 0.25  # the started flow is settled after 3 s in a row under 25% of a core
SETTLE_S = 3.0  # after creating or stopping an experiment: every worker re-reads experiments each second
LOADED_READS = 12  # consecutive reports saying the treatment is loaded (the API spreads them over the workers)
ML_KEY_ENV = "PANTRY_BENCH_ML_ENGINEER_KEY"  # the harness makes this key for the run (ml_engineer scope)


class _Request(msgspec.Struct):
    customer_id: int


class _Item(msgspec.Struct):
    product_id: int


class _Answer(msgspec.Struct):
    decision_id: str
    model_version: str
    items: list[_Item]


_request, _answer, _json = msgspec.json.Decoder(_Request), msgspec.json.Decoder(_Answer), msgspec.json.Encoder()


class OutcomePoster:
    """Turns answers into outcome events and posts them to /v1/events; runs in its own process (`post_outcomes`),
    as a storefront's outcome reporting is a client apart from the shopper's request: sharing the load generator's
    event loop, building and posting ~3,000 events/s would delay its requests and show up in the measured p99."""

    def __init__(self, base_url: str, ingest_key: str, ts: str, treatment: str, round_tag: str) -> None:
        self.client = httpx.Client(base_url=base_url, timeout=10, headers={"X-API-Key": ingest_key})
        self.ts, self.treatment, self.tag = ts, treatment, round_tag
        self.answers = self.treatment_answers = self.posted = self.errors = 0

    def events(self, batch: list[tuple[bytes, bytes]]) -> list[dict]:
        out = []
        for body, raw in batch:
            customer, answer = _request.decode(body).customer_id, _answer.decode(raw)
            self.answers += 1
            self.treatment_answers += answer.model_version == self.treatment
            common = {"ts": self.ts, "customer_id": customer, "decision_id": answer.decision_id}
            if PER_ITEM_IMPRESSIONS:
                for i, item in enumerate(answer.items):
                    out.append({"type": "impression", "event_id": f"bench-{self.tag}-{answer.decision_id}-{i}",
                                "product_id": item.product_id, **common})
            elif answer.items:  # the answer shown: one impression, which the join counts for each of its items
                out.append({"type": "impression", "event_id": f"bench-{self.tag}-{answer.decision_id}-i", **common})
            if answer.items and self.answers % CLICK_EVERY == 0:
                out.append({"type": "click", "event_id": f"bench-{self.tag}-{answer.decision_id}-c",
                            "product_id": answer.items[0].product_id, **common})
        return out

    def post(self, batch: list[tuple[bytes, bytes]]) -> None:
        events = self.events(batch)
        for lo in range(0, len(events), 1000):  # max_events_per_batch
            chunk = events[lo:lo + 1000]
            try:
                status = self.client.post("/v1/events", content=_json.encode({"events": chunk}),
                                          headers={"Content-Type": "application/json"}).status_code
            except httpx.HTTPError:
                status = 0
            if status == 202:
                self.posted += len(chunk)
            else:
                self.errors += len(chunk)


def post_outcomes(feed: Connection, *args: str) -> None:
    """The poster process: posts each batch of (request body, answer) it receives until None, then sends back
    (answers, treatment answers, posted, errors)."""
    poster = OutcomePoster(*args)
    feed.send("ready")
    for batch in iter(feed.recv, None):
        poster.post(batch)
    feed.send((poster.answers, poster.treatment_answers, poster.posted, poster.errors))
    poster.client.close()


class OutcomeFeed:
    """The load generator's side: collects answers (open_loop's on_answer) and hands them to the poster process
    every OUTCOME_FLUSH_S."""

    def __init__(self, base_url: str, ingest_key: str, ts: str, treatment: str, round_tag: str) -> None:
        self.feed, child = multiprocessing.get_context("spawn").Pipe()
        self.process = multiprocessing.get_context("spawn").Process(
            target=post_outcomes, args=(child, base_url, ingest_key, ts, treatment, round_tag), daemon=True)
        self.process.start()
        # its start-up (a Python process importing httpx and msgspec: ~1 s of CPU) is not the round's load: wait
        if not self.feed.poll(120) or self.feed.recv() != "ready":
            raise RuntimeError("the outcome poster process did not start")
        self.pending: list[tuple[bytes, bytes]] = []
        self.answers = self.treatment_answers = self.posted = self.errors = 0

    def on_answer(self, body: bytes, answer: bytes) -> None:
        self.pending.append((body, answer))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(OUTCOME_FLUSH_S)
            if self.pending:
                batch, self.pending = self.pending, []
                self.feed.send(batch)

    def finish(self) -> None:
        if self.pending:
            self.feed.send(self.pending)
        self.feed.send(None)
        self.answers, self.treatment_answers, self.posted, self.errors = self.feed.recv()
        self.process.join(timeout=30)


async def with_outcomes(base_url: str, bodies: Callable[[], bytes], rate: float, step_s: float, client_key: str,
                        feed: OutcomeFeed) -> Load:
    stop = asyncio.Event()
    handing = asyncio.create_task(feed.run(stop))
    try:
        return await open_loop(base_url, "/v1/recommendations", bodies, rate, step_s, api_key=client_key,
                               on_answer=feed.on_answer)
    finally:
        stop.set()
        await handing


@contextmanager
def live_flow_running(settings: Settings, log: str) -> Iterator[None]:
    """`pantry stream live` beside the API (as `pantry serve` runs it) until the block ends."""
    client = sync_client(settings)
    client.delete(LIVE_HEARTBEAT)  # started = a heartbeat of this flow
    with open(log, "ab") as out:
        proc = subprocess.Popen(pantry_command("stream", "live", "--no-progress"), env=subprocess_env(settings),
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not live_flow(client, 5.0, partitions=settings.stream_partitions).ok:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"`pantry stream live` did not start (exit {proc.poll()}; log {log})")
            time.sleep(0.2)
        settled(proc.pid)
        yield
    finally:
        stop_group(proc, timeout_s=60)


def settled(pid: int, timeout_s: float = 90.0) -> None:
    """Until the flow's start-up work is over: its first refresh lists every entity of the state (seconds of CPU
    after a full-year replay), which would fall in the first without-round as a stall the steady flow does not
    cause. Done = FLOW_SETTLED_S seconds in a row under FLOW_SETTLED_CPU of a core."""
    import psutil

    flow, deadline, quiet = psutil.Process(pid), time.monotonic() + timeout_s, 0
    refreshed = time.monotonic() + REFRESH_EVERY_S  # the first refresh comes REFRESH_EVERY_S after the start
    cpu = flow.cpu_times()
    while quiet < FLOW_SETTLED_S and time.monotonic() < deadline:
        time.sleep(1.0)
        now = flow.cpu_times()
        busy = (now.user + now.system) - (cpu.user + cpu.system) >= FLOW_SETTLED_CPU
        quiet = 0 if busy or time.monotonic() < refreshed else quiet + 1
        cpu = now


def treatment_loaded(admin: httpx.Client, experiment_id: str, timeout_s: float = 180.0) -> None:
    """Until the workers have loaded and warmed the treatment: each loads it in a background thread when it sees the
    experiment (seconds of CPU: the recommender ranks every known customer), which is the experiment's start-up,
    not what running one costs. Done = LOADED_READS reports in a row (spread over the workers) say it is loaded."""
    deadline, in_a_row = time.monotonic() + timeout_s, 0
    while in_a_row < LOADED_READS:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the treatment of {experiment_id} was not loaded within {timeout_s:g} s")
        report = admin.get(f"/admin/experiments/{experiment_id}")
        in_a_row = in_a_row + 1 if report.status_code == 200 and report.json().get("treatment_loaded") else 0
        time.sleep(0.25)


def run(settings: Settings, base_url: str, bodies: Callable[[], bytes], rate: float, step_s: float,
        treatment: str) -> ExperimentOverhead:
    """`step_s`: each round's length (ROUND_S in `make bench`, shorter with --quick)."""
    ml_key = os.environ.get(ML_KEY_ENV)
    if not ml_key:
        raise RuntimeError(f"set {ML_KEY_ENV} to a key with the ml_engineer scope")
    client_key, ingest_key = key_for(settings, "/v1/recommendations"), key_for(settings, "/v1/events")
    admin = httpx.Client(base_url=base_url, timeout=10, headers={"X-API-Key": ml_key})
    ts = httpx.get(f"{base_url}/v1/clock", headers={"X-API-Key": client_key}, timeout=10).json()["now"]
    with live_flow_running(settings, str(settings.data_dir / "experiment-overhead-flow.log")):
        return _rounds(admin, base_url, bodies, rate, step_s, treatment, ts, client_key, ingest_key)


def _rounds(admin: httpx.Client, base_url: str, bodies: Callable[[], bytes], rate: float, step_s: float,
            treatment: str, ts: str, client_key: str, ingest_key: str) -> ExperimentOverhead:
    without, experiment_only, with_, experiments = [], [], [], []
    posted = errors = treatment_answers = 0
    for n in range(ROUNDS):
        asyncio.run(closed_loop(base_url, "/v1/recommendations", bodies, 8, 1.0, api_key=client_key))
        without.append(asyncio.run(open_loop(base_url, "/v1/recommendations", bodies, rate, step_s,
                                             api_key=client_key)))
        created = admin.post("/admin/experiments", json={"model": "recommender", "treatment": treatment, "share": 0.5})
        if created.status_code != 201:
            raise RuntimeError(f"POST /admin/experiments: {created.status_code} {created.text[:300]}")
        eid = created.json()["experiment_id"]
        experiments.append(eid)
        treatment_loaded(admin, eid)
        time.sleep(SETTLE_S)
        asyncio.run(closed_loop(base_url, "/v1/recommendations", bodies, 8, 1.0, api_key=client_key))
        # the experiment alone (no outcomes posted): what assignment and a second model cost, apart from ingest
        experiment_only.append(asyncio.run(open_loop(base_url, "/v1/recommendations", bodies, rate, step_s,
                                                     api_key=client_key)))
        poster = OutcomeFeed(base_url, ingest_key, ts, treatment, f"{eid}-{n}")
        with_.append(asyncio.run(with_outcomes(base_url, bodies, rate, step_s, client_key, poster)))
        poster.finish()
        posted, errors, treatment_answers = (posted + poster.posted, errors + poster.errors,
                                             treatment_answers + poster.treatment_answers)
        admin.post(f"/admin/experiments/{eid}/stop", json={"note": "make bench round done"})
        time.sleep(SETTLE_S)
        print(f"experiment-overhead round {n + 1}: without {without[-1]}; experiment only {experiment_only[-1]}; "
              f"experiment + outcomes {with_[-1]}", flush=True)
    time.sleep(SETTLE_S)  # the flow joins the last outcomes (it flushes KPI totals every 0.25 s)
    counted = 0
    for eid in experiments:
        rows = admin.get("/admin/kpis", params={"experiment": eid, "by_day": "false"}).json()["rows"]
        counted += sum(r["impressions"] for r in rows)
    return ExperimentOverhead(round_s=step_s, rounds_without=without, rounds_with=with_,
                              rounds_experiment_only=experiment_only,
                              treatment=treatment,
                              treatment_answers=treatment_answers, outcomes_posted=posted, outcome_errors=errors,
                              impressions_counted=counted,
                              impression_per="item" if PER_ITEM_IMPRESSIONS else "answer")
