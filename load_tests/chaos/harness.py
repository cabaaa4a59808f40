"""`make chaos`: start the demo stack on its prepared data dir, measure answers with Redis hung (one at a time and
concurrently), then run the steady mixed load and apply each fault in turn; check every acknowledged event took
effect; write docs/RELIABILITY.md (the figures also as JSON beside the run's logs).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import msgspec

from load_tests.bench import machine
from load_tests.bench.serving import Requests
from load_tests.chaos import faults, hung, lost
from load_tests.chaos.report import ChaosReport, render
from load_tests.chaos.stack import Stack, chaos_settings
from load_tests.chaos.traffic import Traffic
from load_tests.keys import headers_for, with_run_key
from pantry.keys import WATERMARK
from pantry.redis_server import sync_client
from pantry.settings import ROOT

BASELINE_S = 10.0
SETTLE_S = 3.0


def say(start: float, message: str) -> None:
    minutes, seconds = divmod(int(time.monotonic() - start), 60)
    print(f"==> [{minutes:02d}:{seconds:02d}] {message}", flush=True)


def run_all(output: Path | None = None) -> int:
    started = time.monotonic()
    output = output or ROOT / "docs" / "RELIABILITY.md"
    # one key made for the run (answers, ingest, features), given to the demo's service in PANTRY_API_KEYS
    settings = with_run_key(chaos_settings())
    work = settings.data_dir / "run"
    work.mkdir(parents=True, exist_ok=True)
    stack = Stack(settings, work / "stack.log")
    report = ChaosReport(machine=machine.describe(), command="make chaos")
    say(started, f"chaos: data {settings.data_dir}, redis port {settings.embedded_redis_port}, "
                 f"port {settings.port}, logs {stack.log}")
    try:
        say(started, "prepare the data dir (pantry demo --no-serve)")
        stack.prepare()
        stack.restore()
        say(started, "start the stack (pantry demo)")
        stack.start()
        workers = len(stack.worker_pids())
        reqs = Requests(settings)
        say(started, "answers with Redis hung (SIGSTOP): one at a time, then 16 concurrent")
        report.hung, report.hung_recovery_s = asyncio.run(
            hung.run(stack.base_url, stack.redis_pid(), reqs, headers_for(settings, "/v1/recommendations")))
        for figure in report.hung:
            say(started, f"   {msgspec.json.encode(figure).decode()}")
        time.sleep(SETTLE_S)
        client = sync_client(settings)
        start_id = lost.last_id(client, settings.stream_partitions)
        seen_at_start = lost.flow_seen(client, settings.stream_partitions)
        watermark = float(client.get(WATERMARK) or time.time())
        traffic = Traffic(stack.base_url, reqs, watermark, headers_for(settings, "/v1/recommendations"),
                          headers_for(settings, "/v1/events"))
        say(started, f"steady load: {traffic.answer_rps:.0f} answers/s, "
                     f"{traffic.batch_rps * traffic.batch_size:.0f} events/s; baseline {BASELINE_S:.0f} s")
        traffic.start()
        time.sleep(BASELINE_S)
        baseline = faults.FaultRow(name="baseline (no fault)", start_t=0.0, lifted_t=BASELINE_S,
                                   end_t=traffic.now())
        faults.measure(baseline, traffic)
        report.rows.append(baseline)
        for name, fn in faults.FAULTS:
            say(started, f"fault: {name}")
            row = faults.apply(name, fn, stack, traffic, workers)
            report.rows.append(row)
            time.sleep(SETTLE_S)
            faults.restart_if_exited(stack, row, " after its recovery check")
            say(started, f"   recovered in {row.recovery_s} s; {'; '.join(row.notes)}")
        say(started, "stop the load; retry unacknowledged batches (up to 60 s)")
        traffic.stop(drain_s=60.0)
        (work / "traffic.msgpack").write_bytes(msgspec.msgpack.encode(  # every answer and batch, for a closer look
            {"answers": traffic.answers, "batches": traffic.batches,
             "faults": [(r.name, r.start_t, r.lifted_t, r.end_t) for r in report.rows]}))
        finish(report, traffic, settings, start_id, seen_at_start, started)
    finally:
        say(started, "stop the stack")
        stack.stop()
    report.total_s = round(time.monotonic() - started, 1)
    report.machine["load average at end"] = machine.load_average()
    (work / "report.json").write_bytes(msgspec.json.encode(report))
    output.write_text(render(report))
    say(started, f"wrote {output}")
    for line in render(report).splitlines():
        if line.startswith("| ") or line.startswith("**"):
            print("    " + line)
    return 0


def finish(report: ChaosReport, traffic: Traffic, settings, start_id: str, seen_at_start: int,
           started: float) -> None:
    """The lost-event checks, overall and per fault (a batch belongs to the fault whose span it was first sent in)."""
    client = sync_client(settings)
    acked = [i for b in traffic.batches if b.acked_t is not None for i in b.ids]
    say(started, f"check: {len(acked)} acknowledged events in the stream?")
    report.stream = lost.check_stream(client, start_id, f"chaos-{traffic.run_id}-", acked)
    say(started, "check: every stream entry processed by the flow? (waits up to 90 s)")
    report.flow = lost.check_flow(client, start_id, seen_at_start, timeout_s=90.0)
    present = lost.stream_ids(client, start_id, f"chaos-{traffic.run_id}-")
    for row in report.rows:
        mine = [b for b in traffic.batches if row.start_t <= b.t < row.end_t and b.acked_t is not None]
        row.lost_events = sum(1 for b in mine for i in b.ids if i not in present)
    unacked = [b for b in traffic.batches if b.acked_t is None]
    report.unacked_events = sum(len(b.ids) for b in unacked)
    report.answers_total = len(traffic.answers)
    report.events_sent = sum(len(b.ids) for b in traffic.batches)
