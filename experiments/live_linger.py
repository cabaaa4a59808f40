"""What the live flow spends on a trickle of decisions, by PANTRY_LIVE_LINGER_MS (docs/DECISIONS.md "Live batches
linger").

Beside the API, the live flow reads the decision log (an entry per answer: 300 a second at the bench's rate) and
joins the outcomes. Read as they come, they make one batch per read, and each batch costs the whole flow's per-batch
work; the linger makes a few batches a second instead. For each linger this starts `pantry stream live` on a built
state, re-logs that state's latest decision-log entries at RATE a second for 25 s, and reads the flow's threads'
CPU time and context switches (/proc) over the last 10 s. It changes the state it runs on (the flow consumes the
stream and the log grows): use the bench's.

With OUTCOMES=1, each re-logged decision gets a fresh decision_id and, as the experiment-overhead part of
`make bench` posts them, an impression of the whole answer and, for one decision in ten, a click on its first item
(~1.1 outcome events per decision, XADDed to pantry:events): the flow's cost of the outcome join.

    make bench   # once: builds .pantry/bench (its decision log has the serving part's answers)
    PANTRY_DATA_DIR=.pantry/bench [OUTCOMES=1] python -m experiments.live_linger [RATE] [LINGER_MS ...]
"""

from __future__ import annotations

import os
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import msgspec
import psutil

from experiments.built_state import own_redis
from load_tests.bench.experiment_overhead import live_flow_running
from pantry.events import Click, Impression, encode_msgpack
from pantry.keys import DECISIONS_STREAM, EVENT_FIELD, EVENTS_STREAM
from pantry.redis_server import sync_client

WARM_S, MEASURE_S = 15.0, 10.0


def threads(pid: int) -> dict[str, tuple[int, float]]:
    """Per thread: context switches (voluntary + not) and CPU seconds so far."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            task = Path(f"/proc/{pid}/task/{tid}")
            status = dict(line.split(":\t", 1) for line in (task / "status").read_text().splitlines() if ":\t" in line)
            stat = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        switches = int(status["voluntary_ctxt_switches"]) + int(status["nonvoluntary_ctxt_switches"])
        out[tid] = (switches, (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK"))
    return out


def outcomes(fields: dict[bytes, bytes], i: int) -> list:
    """An impression of the answer, and a click on its first item for one decision in ten (after the decision:
    the join also takes an outcome that comes first)."""
    decision_id = fields[b"decision_id"].decode()
    customer = int(fields[b"customer_id"])
    ts = datetime.fromisoformat(msgspec.json.decode(fields[b"now"]))
    out = [Impression(event_id=f"{decision_id}-i", ts=ts, customer_id=customer, decision_id=decision_id)]
    items = msgspec.json.decode(fields.get(b"items") or b"[]")
    if i % 10 == 0 and isinstance(items, list) and items and items[0].get("product_id") is not None:
        out.append(Click(event_id=f"{decision_id}-c", ts=ts, customer_id=customer, decision_id=decision_id,
                         product_id=items[0]["product_id"]))
    return out


def measure(settings, rate: float, linger_ms: int, log: str) -> tuple[float, float]:
    os.environ["PANTRY_LIVE_LINGER_MS"] = str(linger_ms)
    client = sync_client(settings)
    sample = [fields for _, fields in client.xrevrange(DECISIONS_STREAM, count=500)]
    if not sample:
        sys.exit("the state has no decision-log entries: run `make bench` (or serve some answers) first")
    stop = threading.Event()
    with_outcomes = os.environ.get("OUTCOMES") == "1"

    def feed() -> None:
        sent, t0 = 0, time.monotonic()
        while not stop.is_set():
            due = int((time.monotonic() - t0) * rate)
            pipe = client.pipeline(transaction=False)
            for i in range(sent, due):
                fields = sample[i % len(sample)]
                if with_outcomes:
                    fields = {**fields, b"decision_id": f"linger-{linger_ms}-{i}".encode()}
                    for event in outcomes(fields, i):
                        pipe.xadd(EVENTS_STREAM, {EVENT_FIELD: encode_msgpack(event)})
                pipe.xadd(DECISIONS_STREAM, fields)
            pipe.execute()
            sent = due
            time.sleep(0.01)

    with live_flow_running(settings, log):
        pid = next(p.pid for p in psutil.process_iter(["cmdline"])
                   if "stream live" in " ".join(p.info["cmdline"] or []))
        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        time.sleep(WARM_S)  # past the first refresh, which lists every entity once
        before = threads(pid)
        time.sleep(MEASURE_S)
        after = threads(pid)
        stop.set()
        feeder.join()
    switches = sum(after[t][0] - before[t][0] for t in after if t in before) / MEASURE_S
    cpu = sum(after[t][1] - before[t][1] for t in after if t in before) / MEASURE_S * 100
    return cpu, switches


def main() -> None:
    rate = float(sys.argv[1]) if len(sys.argv) > 1 else 300.0
    lingers = [int(a) for a in sys.argv[2:]] or [0, 50, 200]
    with own_redis(PANTRY_CLOCK="event") as settings:  # the event clock, as the bench runs it
        for linger in lingers:
            cpu, switches = measure(settings, rate, linger, str(settings.data_dir / "live-linger.log"))
            print(f"linger {linger:4d} ms: flow CPU {cpu:5.1f}% of a core, {switches:6.1f} context switches/s "
                  f"({rate:g} decisions/s{' with outcomes' if os.environ.get('OUTCOMES') == '1' else ''})", flush=True)


if __name__ == "__main__":
    main()
