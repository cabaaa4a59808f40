"""Running the dataflow in this process: recovery store, progress bar, clean stop, replay bookkeeping."""

from __future__ import annotations

import gc
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import redis
from tqdm import tqdm

from pantry.clock import from_epoch
from pantry.keys import WATERMARK
from pantry.partitions import counters_key, events_streams, merge_counters
from pantry.redis_server import sync_client
from pantry.settings import MAX_STREAM_PARTITIONS, Settings, to_json
from pantry.supervisor import die_with_parent
from streaming import forked_snapshots
from streaming.epoch_clock import CLOCK
from streaming.retention import recovery_dir

REPLAY_RECORD = "pantry:stream:replay"  # hash: until, events, completed_at, seconds (a completed replay)
STREAM_VIEWS = ("customer_session", "customer_activity", "customer_repertoire", "store_traffic", "store_product",
                "customer_substitution_feedback", "product_substitution_feedback")

# Epoch length = how often state is snapshotted (and how much a restart re-processes). A snapshot encodes the
# state of every shard that saw events in the epoch, a pause of O(state): rare in live mode, where pauses show
# up as freshness. Recovery stays at-least-once with any interval (the live source resumes from the snapshotted
# stream id); a longer one only means more events re-processed after a crash (up to 5 minutes' worth). A replay
# snapshots every 30 s: its state grows to ~180 MB of msgpack over the full year (every shard sees events in every
# epoch, so each snapshot encodes all of it: ~0.3 s of CPU each, plus the recovery store's write), and a crash
# costs at most 30 s of replay again.
SNAPSHOT_S = {"replay": 30.0, "live": 300.0}


def snapshot_interval_s(settings: Settings, mode: str) -> float:
    # settings.stream_snapshot_s: shorter in tests that crash the flow on purpose
    return settings.stream_snapshot_s or SNAPSHOT_S[mode]


class ReplayRecord(msgspec.Struct):
    until: str  # "" = the whole data set
    events: int
    completed_at: str
    seconds: float


def ensure_recovery(settings: Settings, partitions: int = 1) -> Path:
    """The recovery directory, made with `partitions` Bytewax recovery partitions if it is new (an existing one keeps
    its count: Bytewax resumes from the whole set). `--processes N` on one machine makes one per worker, all in the
    directory they share, and Bytewax spreads them over the workers. A cluster across machines holds process 0's:
    on the others (`--process-id` > 0) the directory starts empty, and Bytewax sends their snapshots to process 0."""
    from bytewax.recovery import init_db_dir

    path = recovery_dir(settings)
    if not path.exists():
        path.mkdir(parents=True)
        if partitions:
            init_db_dir(path, partitions)
    return path


def reset(settings: Settings) -> None:
    """Forget all stream state: recovery store, feature log, counters, watermark, replay record, and the KPI totals
    (their state is in the recovery store: a live flow started afterwards counts the decision log again)."""
    from pantry.kpis import KPI_COUNTERS, KPI_HASHES

    shutil.rmtree(recovery_dir(settings), ignore_errors=True)
    for view in STREAM_VIEWS:
        shutil.rmtree(settings.feature_log_dir / view, ignore_errors=True)
    client = sync_client(settings)
    client.delete(WATERMARK, REPLAY_RECORD, KPI_COUNTERS)
    for p in range(MAX_STREAM_PARTITIONS):  # every partition a flow may have had; one by one (Redis Cluster slots)
        client.delete(counters_key(p))
    for key in KPI_HASHES:  # one by one: on a Redis Cluster they are in different slots
        client.delete(key)


def read_record(settings: Settings) -> ReplayRecord | None:
    raw = sync_client(settings).hgetall(REPLAY_RECORD)
    if not raw:
        return None
    fields = {k.decode(): v.decode() for k, v in raw.items()}
    return msgspec.convert(fields, ReplayRecord, strict=False)


def write_record(settings: Settings, record: ReplayRecord) -> None:
    sync_client(settings).hset(REPLAY_RECORD, mapping=msgspec.structs.asdict(record))


def read_counters(client, partitions: int = 1) -> dict[str, float]:
    """The gates' counters over the stream's partitions (pantry.partitions.merge_counters)."""
    if partitions == 1:
        return merge_counters([client.hgetall(counters_key(0))])
    pipe = client.pipeline(transaction=False)
    for p in range(partitions):
        pipe.hgetall(counters_key(p))
    return merge_counters(pipe.execute())


def _seen(counters: dict[str, float]) -> int:
    return int(sum(counters.get(k, 0) for k in ("processed", "duplicate", "late", "invalid", "forgotten")))


class Progress(threading.Thread):
    """Polls the counters the control sink writes and shows them on a tqdm bar."""

    def __init__(self, settings: Settings, total: int | None, desc: str, live: bool, enabled: bool):
        super().__init__(daemon=True)
        self.client = sync_client(settings)
        self.live = live
        self.partitions = settings.stream_partitions if live else 1
        self.stop_event = threading.Event()
        self.base = _seen(read_counters(self.client, self.partitions))
        self.bar = tqdm(total=total, desc=desc, unit="ev", disable=not enabled, dynamic_ncols=True)

    def run(self) -> None:
        from streaming.redis_retry import REDIS_DOWN

        while not self.stop_event.wait(0.5):
            try:
                self.update()
            except REDIS_DOWN:  # Redis restarting or hung: the bar waits, the flow goes on (and so does this thread)
                pass

    def update(self) -> None:
        counters = read_counters(self.client, self.partitions)
        done = _seen(counters) - self.base
        self.bar.update(max(0, done - self.bar.n))
        postfix = {}
        if "max_event_ts" in counters:
            postfix["watermark"] = from_epoch(counters["max_event_ts"]).strftime("%Y-%m-%d %H:%M")
        if self.live:
            # trimmed entries were all seen (streaming.retention): XLEN + trimmed is every entry ever added
            added = sum(self.client.xlen(stream) for stream in events_streams(self.partitions))
            postfix["lag"] = max(0, added + int(counters.get("trimmed", 0)) - _seen(counters))
        elif self.bar.total:
            postfix["lag"] = self.bar.total - done
        self.bar.set_postfix(postfix, refresh=False)

    def finish(self) -> None:
        from streaming.redis_retry import REDIS_DOWN

        self.stop_event.set()
        self.join(timeout=2)
        try:
            self.update()
        except REDIS_DOWN:
            pass
        self.bar.close()


def run_flow(settings: Settings, config, workers: int, stop_flag: Callable[[], bool] | None = None,
             layout=None, processes: int = 1, on_start: Callable[[], None] | None = None) -> None:
    """Run the flow to its end: `workers` threads in this process, times `processes` (the others are children
    that run the same flow; they die with this process). `on_start` is called once every process is ready.
    `stop_flag` true ends the flow: the children get a SIGTERM then, which sets theirs (streaming.worker), as the
    live source may be in any of them."""
    if processes <= 1:
        run_process(settings, config, workers, stop_flag=stop_flag, layout=layout, on_start=on_start)
        return
    # before any process opens it: a recovery partition per worker of the cluster, so that each writes its share of
    # the snapshots (they all see the one directory; with a single partition one worker wrote every process's)
    ensure_recovery(settings, partitions=processes * workers)
    addresses = free_addresses(processes)
    children = [spawn_process(settings, config, workers, i, addresses) for i in range(1, processes)]
    done = threading.Event()
    if stop_flag is not None:
        threading.Thread(target=_forward_stop, args=(stop_flag, done, children), name="flow-stop", daemon=True).start()
    try:
        for i, child in enumerate(children, 1):  # each says "ready" once imported and built, before it joins
            if child.stdout.readline().strip() != b"ready":
                raise RuntimeError(f"process {i} of the flow did not start: "
                                   f"{child.stderr.read().decode(errors='replace')[-2000:]}")
        run_process(settings, config, workers, stop_flag=stop_flag, layout=layout, process_id=0, addresses=addresses,
                    on_start=on_start)
    finally:
        done.set()
        failed = []
        for i, child in enumerate(children, 1):
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            if child.returncode:
                failed.append(f"process {i} exited with {child.returncode}: "
                              f"{child.stderr.read().decode(errors='replace')[-2000:]}")
    if failed:
        raise RuntimeError("; ".join(failed))


def _forward_stop(stop_flag: Callable[[], bool], done: threading.Event, children: list[subprocess.Popen]) -> None:
    while not done.wait(0.1):
        if stop_flag():
            for child in children:
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)
            return


def run_process(settings: Settings, config, workers: int, stop_flag: Callable[[], bool] | None = None,
                layout=None, process_id: int | None = None, addresses: list[str] | None = None,
                on_start: Callable[[], None] | None = None) -> None:
    from bytewax.recovery import RecoveryConfig
    from bytewax.run import cli_main

    from streaming.dataflow import build_flow

    flow = build_flow(settings, config, stop_flag, layout, workers=workers * (len(addresses) if addresses else 1))
    backup = timedelta(seconds=settings.stream_backup_interval_s) if settings.stream_backup_interval_s else None
    directory = ensure_recovery(settings, partitions=0 if process_id else workers)
    recovery = RecoveryConfig(directory, backup_interval=backup)
    # The state is millions of small acyclic objects: the default GC thresholds rescan them over and over.
    thresholds = gc.get_threshold()
    gc.set_threshold(200_000, 50, 1000)
    replay_without_gc = config.mode == "replay" and gc.isenabled()
    if replay_without_gc:
        # A replay is bounded and makes next to no reference cycles (157 cyclic objects over Jan-Mar), but every
        # state object it keeps (sales, baskets, pairs: ~6 per event) was traversed by a young-generation
        # collection once: ~10 % of the flow's CPU. The collector is off for the replay and back on after it.
        gc.collect()
        gc.disable()
    interval_s = snapshot_interval_s(settings, config.mode)
    if config.mode == "live" and settings.stream_fork_snapshots and not process_id:  # before anything of this run forks
        forked_snapshots.sweep(directory, forked_snapshots.directory_of(settings))
    CLOCK.start(interval_s)
    if on_start is not None:
        on_start()
    try:
        cli_main(flow, workers_per_process=workers, process_id=process_id, addresses=addresses,
                 epoch_interval=timedelta(seconds=interval_s), recovery_config=recovery)
    finally:
        if replay_without_gc:
            gc.enable()
        if config.mode == "live":  # the live sink froze the heap at each batch (streaming.sinks.OnlinePartition)
            gc.unfreeze()
        gc.set_threshold(*thresholds)


def free_addresses(n: int) -> list[str]:
    """n local TCP addresses for the processes of one flow (ports the OS just handed out as free)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [f"127.0.0.1:{s.getsockname()[1]}" for s in socks]
    finally:
        for s in socks:
            s.close()


def spawn_process(settings: Settings, config, workers: int, process_id: int, addresses: list[str]):
    """Process `process_id` of the flow: `python -m streaming.worker` with these settings and config."""
    args = WorkerArgs(to_json(settings), msgspec.json.encode(config).decode(), workers, process_id, addresses)
    return subprocess.Popen([sys.executable, "-m", "streaming.worker", msgspec.json.encode(args).decode()],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=die_with_parent(signal.SIGKILL))  # never outlive the flow's process 0


class WorkerArgs(msgspec.Struct):
    """What `python -m streaming.worker` is given (one JSON argument)."""

    settings: str  # pantry.settings.to_json
    config: str  # StreamConfig as JSON
    workers: int
    process_id: int
    addresses: list[str]


def count_events(settings: Settings, until: datetime | None) -> int:
    from pantry.dataset import read_events

    return read_events(settings, until=until, columns=["ts"]).num_rows


def replay(settings: Settings, until: datetime | None, speed: float | None, workers: int, force: bool,
           progress: bool = True, echo: Callable[[str], None] = print, processes: int = 1) -> ReplayRecord:
    from streaming.dataflow import StreamConfig

    until_s = until.date().isoformat() if until else ""
    record = read_record(settings)
    if force:
        reset(settings)
    elif record is not None:
        if record.until == until_s:
            echo(f"replay until {until_s or 'the end'} already done: {record.events:,} events "
                 f"in {record.seconds:.1f}s at {record.completed_at} (use --force to redo)")
            return record
        if not record.until or (until_s and until_s < record.until):
            raise ValueError(f"a replay until {record.until or 'the end'} is already in the stream state; "
                             f"replaying to an earlier date needs --force (it starts over)")
    total = count_events(settings, until)
    # The Feast layout (registry read; Feast's config validation imports dask: seconds) is read before the clock
    # starts, like the imports: the record's events/s is the flow's (`make bench` also reports it with start-up).
    from pantry.featurestore import repo

    layout = repo.layout(settings)
    clock = {"started": time.monotonic()}  # restarted once every process of the flow is ready

    def on_start() -> None:
        clock["started"] = time.monotonic()

    bar = Progress(settings, total, f"replay until {until_s or 'end'}", live=False, enabled=progress)
    bar.start()
    try:
        config = StreamConfig(mode="replay", until=until, speed=speed, flush_s=settings.stream_replay_flush_s,
                              defer_online=speed is None)  # a paced replay updates the online store as it goes
        run_flow(settings, config, workers, layout=layout, processes=processes, on_start=on_start)
    finally:
        bar.finish()
    seconds = time.monotonic() - clock["started"]
    record = ReplayRecord(until_s, total, datetime.now(UTC).isoformat(timespec="seconds"), round(seconds, 3))
    write_record(settings, record)
    counters = read_counters(sync_client(settings))
    echo(summary(counters, seconds, "replay"))
    return record


def live(settings: Settings, workers: int, progress: bool = True, echo: Callable[[str], None] = print,
         processes: int = 1, process_id: int | None = None, addresses: list[str] | None = None) -> None:
    """Follow the event stream until SIGINT/SIGTERM: `processes` on this machine (the others are children), or, with
    `addresses`, process `process_id` of a cluster whose other processes the operator starts on other machines."""
    from streaming.dataflow import StreamConfig

    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    started = time.monotonic()
    try:  # the counters are the state's, kept across runs: the summary reports this run's share
        before = read_counters(sync_client(settings), settings.stream_partitions)
    except (redis.RedisError, OSError):  # Redis not up yet: the flow waits for it; the summary is then cumulative
        before = None
    bar = Progress(settings, None, "live", live=True, enabled=progress)
    bar.start()
    try:
        config = StreamConfig(mode="live", flush_s=0.0)
        if addresses:
            run_process(settings, config, workers, stop_flag=stop.is_set, process_id=process_id, addresses=addresses)
        else:
            run_flow(settings, config, workers, stop_flag=stop.is_set, processes=processes)
    finally:
        bar.finish()
        for s, handler in previous.items():
            signal.signal(s, handler)
    echo(summary(read_counters(sync_client(settings), settings.stream_partitions), time.monotonic() - started, "live",
                 before))


def summary(counters: dict[str, float], seconds: float, what: str, before: dict[str, float] | None = None) -> str:
    """This run's counts (`counters` minus `before`, the counters when it started: they are the state's, and a live
    flow resumes on a state that has counted before) and its rate."""
    def this_run(name: str) -> int:
        return int(counters.get(name, 0) - (before or {}).get(name, 0))

    n = this_run("processed")
    wm = counters.get("max_event_ts")
    watermark = from_epoch(wm).isoformat() if wm is not None else "none"
    return (f"{what}: {n:,} events processed in {seconds:.1f}s ({n / max(seconds, 1e-9):,.0f}/s overall), "
            f"{this_run('duplicate')} duplicate, {this_run('late')} late, {this_run('invalid')} invalid; "
            f"watermark {watermark}")
