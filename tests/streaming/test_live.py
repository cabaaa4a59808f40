"""The live flow on the real Redis Stream: XADDed events become visible through the Feast SDK within a second,
bad events go to the dead-letter stream with a reason, and a restarted flow resumes after the last entry."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from pantry import dataset, events
from pantry.featurestore import repo
from pantry.keys import DEAD_LETTER_STREAM, EVENT_FIELD, EVENTS_STREAM, WATERMARK
from pantry.redis_server import sync_client
from streaming import runner
from streaming.dataflow import StreamConfig

CUSTOMER, STORE, PRODUCT, OTHER = 990_001, 990, 9_900_001, 9_900_002


class LiveFlow:
    def __init__(self, settings, processes: int = 1):
        self.processes = processes
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(settings,), daemon=True)

    def _run(self, settings) -> None:
        try:
            runner.run_flow(settings, StreamConfig(mode="live", flush_s=0.0), 1, stop_flag=self.stop.is_set,
                            processes=self.processes)
        except BaseException as exc:  # surfaced by the test
            self.error = exc

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "live flow did not stop"
        assert self.error is None, self.error


def xadd(client, *evs) -> None:
    for e in evs:
        client.xadd(EVENTS_STREAM, {EVENT_FIELD: events.encode_msgpack(e)})


def wait_for(predicate, timeout_s: float, every_s: float = 0.02):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)
    return predicate()


def counters(client) -> dict[str, float]:
    return runner.read_counters(client)


@pytest.fixture()
def live_env(feast_applied):
    settings = feast_applied
    client = sync_client(settings)
    watermark = client.get(WATERMARK)
    # events other suites posted to the session's stream (the API tests: mid-2017) are not this flow's: its first
    # event would set the gate's clock to them, and this test's events (after the data's last day) would then be
    # more than the event-clock skew ahead of it (dead letters "future")
    client.delete(EVENTS_STREAM)
    yield settings, client
    # leave the shared session's event clock where it was (other suites judge freshness against it)
    if watermark is None:
        client.delete(WATERMARK)
    else:
        client.set(WATERMARK, watermark)


def test_live_events_reach_feast_within_a_second_and_resume(live_env):
    settings, client = live_env
    fs = repo.store(settings)
    base = datetime.fromisoformat(dataset.manifest(settings).last_event) + timedelta(hours=1)
    base = base.astimezone(UTC)
    run_id = str(time.time_ns())

    def ev(cls, n, minutes, **kw):
        return cls(event_id=f"live-{run_id}-{n}", ts=base + timedelta(minutes=minutes), **kw)

    def customer_row():
        return fs.get_online_features(
            features=["customer_repertoire:repertoire_product_ids", "customer_session:cart_product_ids",
                      "customer_session:session_events"],
            entity_rows=[{"customer_id": CUSTOMER}],
        ).to_dict()

    def store_product_row(product):
        return fs.get_online_features(
            features=["store_product:on_hand", "store_product:in_stock_prob", "store_product:units_7d"],
            entity_rows=[{"store_id": STORE, "product_id": product}],
        ).to_dict()

    with LiveFlow(settings):
        # warm-up: the flow is up once it has processed something
        before = counters(client).get("processed", 0)
        xadd(client, ev(events.ProductView, 0, 0, customer_id=CUSTOMER, product_id=OTHER))
        assert wait_for(lambda: counters(client).get("processed", 0) > before, 60), "live flow never started"

        sent = time.monotonic()
        xadd(client, ev(events.Purchase, 1, 1, customer_id=CUSTOMER, store_id=STORE, basket_id=1,
                        product_id=PRODUCT, quantity=2, sales_value=3.5))
        got = wait_for(lambda: PRODUCT in (customer_row()["repertoire_product_ids"][0] or []), 1.0)
        latency = time.monotonic() - sent
        assert got, ("purchase not in customer_repertoire within 1 s; last dead letters: "
                     f"{[f[b'reason'][:200] for _, f in client.xrevrange(DEAD_LETTER_STREAM, count=3)]}, "
                     f"counters {counters(client)}")

        sent = time.monotonic()
        xadd(client, ev(events.AddToCart, 2, 2, customer_id=CUSTOMER, product_id=OTHER))
        assert wait_for(lambda: customer_row()["cart_product_ids"][0] == [OTHER], 1.0), "cart not updated in 1 s"
        xadd(client, ev(events.Inventory, 3, 3, store_id=STORE, product_id=PRODUCT, on_hand=0))
        got = wait_for(lambda: store_product_row(PRODUCT)["on_hand"][0] == 0, 1.0)
        assert got, "inventory on_hand=0 not visible within 1 s"
        row = store_product_row(PRODUCT)
        assert (row["in_stock_prob"][0], row["units_7d"][0]) == (0.0, 2)

        # bad payloads: dead letters with a reason; a duplicate is only counted
        dead_before = client.xlen(DEAD_LETTER_STREAM)
        client.xadd(EVENTS_STREAM, {EVENT_FIELD: b"\x92not-an-event"})
        client.xadd(EVENTS_STREAM, {EVENT_FIELD: events._msgpack_encoder.encode(
            {"type": "teleport", "event_id": "x", "ts": base.isoformat()})})
        xadd(client, ev(events.AddToCart, 2, 2, customer_id=CUSTOMER, product_id=OTHER))  # same id again
        xadd(client, ev(events.ProductView, 4, -30, customer_id=CUSTOMER, product_id=OTHER))  # 33 min late
        assert wait_for(lambda: client.xlen(DEAD_LETTER_STREAM) >= dead_before + 3, 2.0)
        reasons = [fields[b"reason"].decode() for _, fields in client.xrange(DEAD_LETTER_STREAM)[-3:]]
        assert sum(r.startswith("invalid") for r in reasons) == 2 and reasons[-1].startswith("late"), reasons
        c = counters(client)
        assert c["duplicate"] >= 1 and c["late"] >= 1 and c["invalid"] >= 2
        processed = c["processed"]
        assert customer_row()["session_events"][0] == 3

    # restarted: continues after the last entry (nothing re-applied), with the state it had
    with LiveFlow(settings):
        xadd(client, ev(events.ProductView, 5, 5, customer_id=CUSTOMER, product_id=PRODUCT))
        assert wait_for(lambda: customer_row()["session_events"][0] == 4, 60), customer_row()
        # the counters come from the control sink, written independently of the online rows
        assert wait_for(lambda: counters(client)["processed"] == processed + 1, 5.0), counters(client)
        time.sleep(0.3)
        assert counters(client)["processed"] == processed + 1
    assert latency < 1.0


def test_two_live_processes_serve_every_shard_stop_cleanly_and_resume_as_one(live_env):
    """`pantry stream live --processes 2`: the shards are spread over both processes (customers and store x product
    pairs whose shards land in each), every event's rows reach Feast, a stop ends both processes, and one process
    resumes after the last entry they processed."""
    settings, client = live_env
    fs = repo.store(settings)
    # event times before the later tests' (+2 h): the flow's clock must not move them past the lateness bound
    base = (datetime.fromisoformat(dataset.manifest(settings).last_event) + timedelta(minutes=80)).astimezone(UTC)
    run_id = str(time.time_ns())
    customers = [CUSTOMER + 10 + i for i in range(16)]  # 16 consecutive ids: every customer shard (id % 16)
    stores = [STORE + 100 + i for i in range(16)]  # pairs no other test sells

    def purchases(minute: int):
        return [events.Purchase(event_id=f"two-{run_id}-{minute}-{i}", ts=base + timedelta(minutes=minute),
                                customer_id=c, store_id=s, basket_id=minute * 100 + i, product_id=PRODUCT,
                                sales_value=1.0) for i, (c, s) in enumerate(zip(customers, stores, strict=True))]

    def units():
        rows = fs.get_online_features(features=["store_product:units_7d"],
                                      entity_rows=[{"store_id": s, "product_id": PRODUCT} for s in stores]).to_dict()
        return rows["units_7d"]

    def baskets():
        return fs.get_online_features(features=["customer_activity:orders_7d"],
                                      entity_rows=[{"customer_id": c} for c in customers]).to_dict()["orders_7d"]

    with LiveFlow(settings, processes=2) as flow:
        before = counters(client).get("processed", 0)
        xadd(client, *purchases(0))
        assert wait_for(lambda: counters(client).get("processed", 0) >= before + 16, 90), \
            f"two-process live flow never processed the events: {counters(client)}, {flow.error}"
        assert wait_for(lambda: units() == [1] * 16 and baskets() == [1] * 16, 5.0), (units(), baskets())
    processed = counters(client)["processed"]
    with LiveFlow(settings):
        xadd(client, *purchases(1))
        assert wait_for(lambda: units() == [2] * 16 and baskets() == [2] * 16, 60), (units(), baskets())
        assert wait_for(lambda: counters(client)["processed"] == processed + 16, 5.0), counters(client)


def test_a_flow_across_machines_keeps_its_state_where_process_0_is(live_env, tmp_path):
    """`pantry stream live --addresses A,B --process-id I` on two "machines" (two data directories, one Redis), the
    stream in two partitions: the partitions and the shards spread over both, the recovery partition stays with
    process 0 (the other's directory has none: Bytewax sends its snapshots there), and one process resumes from it
    after both stop."""
    import shutil
    import signal
    import subprocess

    from load_tests.server import pantry_command
    from pantry.partitions import counters_key, events_stream, partition_of
    from pantry.settings import subprocess_env
    from streaming.retention import recovery_dir
    from streaming.runner import free_addresses

    settings, client = live_env
    settings = msgspec.structs.replace(settings, stream_partitions=2)
    other = tmp_path / "machine-b"
    other.mkdir()
    (other / "data").symlink_to(settings.dataset_dir)
    shutil.copy(settings.registry_path, other / "registry.db")
    addresses = ",".join(free_addresses(2))
    envs = [subprocess_env(settings), {**subprocess_env(settings), "PANTRY_DATA_DIR": str(other)}]
    base = (datetime.fromisoformat(dataset.manifest(settings).last_event) + timedelta(minutes=90)).astimezone(UTC)
    run_id = str(time.time_ns())
    customers = [CUSTOMER + 40 + i for i in range(16)]

    def purchases(minute: int):
        return [events.Purchase(event_id=f"machines-{run_id}-{minute}-{i}", ts=base + timedelta(minutes=minute),
                                customer_id=c, store_id=STORE + 200 + i, basket_id=minute * 100 + i,
                                product_id=PRODUCT, sales_value=1.0) for i, c in enumerate(customers)]

    def orders():
        return repo.store(settings).get_online_features(
            features=["customer_activity:orders_7d"],
            entity_rows=[{"customer_id": c} for c in customers]).to_dict()["orders_7d"]

    def xadd(client, *evs) -> None:  # each to its customer's partition, as the API writes it
        for e in evs:
            client.xadd(events_stream(partition_of(e.customer_id, None, 2)), {EVENT_FIELD: events.encode_msgpack(e)})

    def counters(client) -> dict[str, float]:
        return runner.read_counters(client, 2)

    before = counters(client).get("processed", 0)
    procs = [subprocess.Popen(pantry_command("stream", "live", "--no-progress", "--addresses", addresses,
                                             "--process-id", str(i)), env={**env, "PANTRY_LIVE_FLOW_NICE": "0"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
             for i, env in enumerate(envs)]
    try:
        xadd(client, *purchases(0))
        assert wait_for(lambda: counters(client).get("processed", 0) >= before + 16, 90), counters(client)
        assert wait_for(lambda: orders() == [1] * 16, 5.0), orders()
        # both partitions were read and gated
        assert float(client.hget(counters_key(1), "processed") or 0) >= sum(c % 2 for c in customers) > 0
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert [p.returncode for p in procs] == [0, 0], [p.stderr.read().decode()[-2000:] for p in procs]
    assert list(recovery_dir(settings).glob("*.sqlite3")) and not list((other / "stream" / "recovery").iterdir())
    processed = counters(client)["processed"]
    with LiveFlow(settings):
        xadd(client, *purchases(1))
        assert wait_for(lambda: orders() == [2] * 16, 60), orders()
        assert wait_for(lambda: counters(client)["processed"] == processed + 16, 5.0), counters(client)


def test_the_live_flow_rides_out_a_hung_then_a_restarted_redis(live_env, redis_server):
    """SIGSTOP longer than the source's 5 s socket timeout, then SIGKILL and a restart on its AOF (every connection
    of the flow stale): the flow does not end, and processes the events posted after each."""
    import os
    import signal

    settings, client = live_env
    base = datetime.fromisoformat(dataset.manifest(settings).last_event).astimezone(UTC) + timedelta(hours=2)
    run_id = str(time.time_ns())

    def post(n: int) -> float:
        before = counters(client).get("processed", 0)
        xadd(client, events.ProductView(event_id=f"hang-{run_id}-{n}", ts=base + timedelta(minutes=n),
                                        customer_id=CUSTOMER, product_id=OTHER))
        return before

    with LiveFlow(settings) as flow:
        before = post(0)
        assert wait_for(lambda: counters(client).get("processed", 0) > before, 60), "live flow never started"
        pid = redis_server.process.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(6.0)
        finally:
            os.kill(pid, signal.SIGCONT)
        before = post(1)
        assert wait_for(lambda: counters(client).get("processed", 0) > before, 15), "no event processed after SIGCONT"
        assert flow.thread.is_alive() and flow.error is None, flow.error

        time.sleep(1.2)  # appendfsync everysec: the counters are in the AOF
        redis_server.kill()
        time.sleep(1.0)  # the flow meets a refused connection meanwhile
        redis_server.start(daemonize=False)
        before = post(2)
        assert wait_for(lambda: counters(client).get("processed", 0) > before, 20), "no event processed after restart"
        assert flow.thread.is_alive() and flow.error is None, flow.error
