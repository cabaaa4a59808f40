"""The sustained bench's pure parts: minute figures, the held rule, the rate search."""

from __future__ import annotations

import os

from load_tests.bench.figures import SustainedMinute, SustainedRun
from load_tests.bench.sustained import (
    Sample,
    judge,
    next_rate,
    per_minute,
    rss_reference,
    search,
)
from load_tests.bench.sustained_sampling import recovery_written


def minute(m: int, p99: float | None = 100.0, rss: float | None = 500.0, offered: float = 10_000,
           missing: int = 0) -> SustainedMinute:
    return SustainedMinute(minute=m, offered_events_per_s=offered, probes=600, missing_probes=missing, p50_ms=20.0,
                           p99_ms=p99, cpu_percent=90.0, rss_mb=rss)


def test_per_minute_splits_probes_events_and_samples_by_send_time():
    # 150 s: two whole minutes and a last half minute; probes at 1 s apart with latency = minute index * 0.1 s
    probes = [(float(t), 0.01 + (t // 60) * 0.1) for t in range(150)]
    probes[130] = (130.0, None)  # a probe of minute 2 never seen
    sent = [(float(t), 100) for t in range(150)]
    samples = [Sample(float(t), cpu_s=t * 0.5, rss_mb=400 + t, lag_s=0.1,
                      others_cpu_s={"redis": t * 0.25, **({"generator": t * 0.1} if t <= 120 else {})},
                      process_cpu_s={"pid7": t * 0.4, **({"pid9": t * 0.1} if t >= 60 else {})})
               for t in range(0, 151, 10)]
    out = per_minute(probes, sent, samples, 150.0)
    assert [m.minute for m in out] == [0, 1, 2]
    assert [m.offered_events_per_s for m in out] == [100, 100, 100]  # the half minute over its own 30 s
    assert [m.probes for m in out] == [60, 60, 29] and [m.missing_probes for m in out] == [0, 0, 1]
    assert out[0].p99_ms == 10.0 and out[1].p99_ms == 110.0
    assert out[2].p99_ms is None  # 1 missing of 30 reaches the p99: infinitely late
    assert out[2].p50_ms == 210.0
    assert [m.cpu_percent for m in out] == [50.0, 50.0, 50.0]
    assert [m.redis_cpu_percent for m in out] == [25.0, 25.0, 25.0]
    assert [m.generator_cpu_percent for m in out] == [10.0, 10.0, None]  # not sampled at the minute's end: unknown
    assert [m.rss_mb for m in out] == [460.0, 520.0, 550.0]
    # process 0 first; a process not there at the minute's start is left out of that minute
    assert [m.process_cpu_percent for m in out] == [[40.0], [40.0, 10.0], [40.0, 10.0]]


def test_per_minute_takes_the_first_sample_as_the_start_when_none_is_at_zero():
    out = per_minute([(1.0, 0.02)], [(0.0, 10)], [Sample(0.2, 1.0, 100.0), Sample(20.0, 11.0, 120.0)], 20.0)
    assert out[0].cpu_percent == round(10 / 19.8 * 100, 1) and out[0].rss_mb == 120.0


def test_held_needs_every_minute_under_the_limit_no_missing_probe_the_rate_offered_and_flat_rss():
    ok = [minute(0, rss=300), minute(1, rss=500), minute(2, rss=540)]
    held, why = judge(ok, 10_000)
    assert held and why.startswith("held")
    assert not judge([*ok[:2], minute(2, p99=501.0)], 10_000)[0]
    assert "p99 501 ms" in judge([*ok[:2], minute(2, p99=501.0)], 10_000)[1]
    assert not judge([*ok[:2], minute(2, missing=1)], 10_000)[0]
    assert not judge([minute(0, p99=None), *ok[1:]], 10_000)[0]
    # RSS: the last minute against the second (start-up growth in the first is allowed)
    assert not judge([*ok[:2], minute(2, rss=551)], 10_000)[0]
    assert judge([*ok[:2], minute(2, rss=550)], 10_000)[0]
    # the generator falling short is not a run that held
    short = judge([minute(0, offered=9_000), *ok[1:]], 10_000)
    assert not short[0] and "generator" in short[1]
    assert not judge([], 10_000)[0]
    # a single minute compares with itself
    assert judge([minute(0)], 10_000)[0]


def test_rss_is_judged_from_the_first_minute_at_the_states_steady_size():
    minutes = [minute(m, rss=r) for m, r in enumerate((300, 500, 700, 900, 1000, 1050))]
    assert rss_reference(minutes, full_s=200).minute == 4  # the first minute starting at or after 200 s
    assert judge(minutes, 10_000, full_s=200)[0]  # 1,000 -> 1,050 MB
    assert not judge(minutes, 10_000)[0]  # windows never full: minute 1's 500 MB
    assert rss_reference(minutes, full_s=28 * 86_400).minute == 1
    assert "minute 1" in judge(minutes, 10_000, full_s=28 * 86_400)[1]
    assert rss_reference(minutes, full_s=300).minute == 1  # the last minute is never its own reference


def test_next_rate_bisects_between_held_and_missed():
    assert next_rate([2_500], [5_000]) == 3_750
    assert next_rate([2_500, 3_750], [5_000]) == 4_500  # (3,750 + 5,000) / 2 = 4,375 -> 4,500 (250s)
    assert next_rate([], [5_000]) == 2_500
    assert next_rate([5_000], []) == 10_000
    assert next_rate([4_750], [5_000]) is None  # within a step
    assert next_rate([], []) is None
    assert next_rate([6_000], [5_000]) == 12_000  # a missed rate below the held one does not bound it


def test_search_runs_until_the_gap_closes_and_returns_the_highest_held():
    def fake(rate: int) -> SustainedRun:  # a flow that holds up to 4,000/s
        return SustainedRun(rate_per_s=rate, processes=1, seconds=60, minutes=[], held=rate <= 4_000, verdict="")

    runs = [fake(2_500), fake(5_000)]
    assert search(fake, runs, steps=10) == 4_000
    assert [r.rate_per_s for r in runs] == [2_500, 5_000, 3_750, 4_500, 4_000, 4_250]
    runs = [fake(2_500), fake(5_000)]
    assert search(fake, runs, steps=1) == 3_750 and len(runs) == 3


def test_a_process_count_the_cli_refuses_is_reported_not_available():
    import subprocess
    import sys

    from load_tests.bench.sustained import processes_available

    assert processes_available(1) is None
    help_text = subprocess.run([sys.executable, "-m", "pantry.cli", "stream", "live", "--help"], capture_output=True,
                               text=True).stdout
    why = processes_available(2)
    if "--processes" in help_text:
        assert why is None
    else:
        assert why is not None and why.startswith("not available") and "--processes" in why


def test_worst_by_second_is_the_slowest_probe_of_each_second_and_none_for_a_missing_one():
    from load_tests.bench.sustained_plot import worst_by_second

    probes = [(0.05, 0.1), (0.55, 0.3), (1.2, 0.05), (2.9, None), (2.1, 0.2), (4.0, 0.4)]
    assert worst_by_second(probes, 5.0) == [300.0, 50.0, None, None, 400.0]  # second 3 had none: as the last


def test_the_freshness_plot_is_drawn_beside_the_report_and_linked_from_its_section(tmp_path):
    import bench_figures
    from PIL import Image

    from load_tests.bench.report import render
    from load_tests.bench.sustained_plot import plot_freshness

    report = bench_figures.report()
    report.sustained.runs[0].worst_ms_by_second = [100.0 + i for i in range(600)]
    plot_freshness(report.sustained, tmp_path)
    assert report.sustained.plot == "img/bench_sustained_freshness.png"
    with Image.open(tmp_path / report.sustained.plot) as image:
        assert image.size == (792, 924)  # a run of minutes: its memory per minute below the freshness
        assert len(set(image.convert("RGB").getdata())) > 10  # drawn, not blank
    assert "![The slowest probe of each second of each run](img/bench_sustained_freshness.png)" in render(report)
    report.sustained.runs[0].minutes = report.sustained.runs[0].minutes[:1]
    plot_freshness(report.sustained, tmp_path)
    with Image.open(tmp_path / report.sustained.plot) as image:
        assert image.size == (792, 550)  # freshness only


def test_spans_writes_whole_seconds_as_ranges():
    from load_tests.bench.sustained_plot import spans

    assert spans([9, 3, 4, 5, 5, 11, 12]) == "3-5, 9, 11-12"
    assert spans([]) == ""


def test_each_run_has_a_redis_of_its_own_and_its_aof_rewrites_are_seen(tmp_path):
    """A real server in the run's data dir: a fresh one (nothing of an earlier run's AOF), and a rewrite in progress
    is what _rewriting reports (the rewrite is held in progress with rdb-key-save-delay, as Redis's own tests do)."""
    import time
    from types import SimpleNamespace

    import redis

    from load_tests.bench.sustained_sampling import own_redis, rewriting

    settings = SimpleNamespace(data_dir=tmp_path)
    (tmp_path / "bench-sustained-redis").mkdir()
    (tmp_path / "bench-sustained-redis" / "appendonly.aof").write_bytes(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n")
    server = own_redis(settings)
    try:
        client = redis.Redis.from_url(server.url, socket_timeout=5)
        assert client.dbsize() == 0  # the earlier AOF was not loaded
        assert not rewriting(client)
        client.mset({f"k{i}": i for i in range(200)})
        client.config_set("rdb-key-save-delay", 10_000)  # microseconds per key: the rewrite takes ~2 s
        client.bgrewriteaof()
        deadline = time.monotonic() + 5
        while not rewriting(client):
            assert time.monotonic() < deadline, "the rewrite never showed"
    finally:
        server.stop()


def test_the_report_and_plot_show_when_the_runs_redis_rewrote_its_aof(tmp_path):
    import bench_figures

    from load_tests.bench.report import render
    from load_tests.bench.sustained_plot import plot_freshness

    report = bench_figures.report()
    run = report.sustained.runs[0]
    run.worst_ms_by_second = [100.0] * 60
    run.redis_rewrite_s = [12, 13, 14, 40]
    run.snapshot_s = [29, 30]
    plot_freshness(report.sustained, tmp_path)
    assert (tmp_path / "img" / "bench_sustained_freshness.png").stat().st_size > 0
    assert "Redis rewrote its AOF in seconds 12-14, 40" in render(report)
    assert "the flow wrote recovery snapshots in seconds 29-30" in render(report)


def test_a_recovery_snapshot_is_seen_as_a_write_of_the_flows_recovery_store(tmp_path):
    """Bytewax writes its SQLite partitions (and their write-ahead logs) only at the end of an epoch; the shared-memory
    index a reader may touch does not count."""
    store = tmp_path / "recovery"
    assert recovery_written(store) == 0.0  # not made yet
    store.mkdir()
    (store / "part-0.sqlite3").write_bytes(b"x")
    os.utime(store / "part-0.sqlite3", (1_000.0, 1_000.0))
    before = recovery_written(store)
    assert before == 1_000.0
    (store / "part-0.sqlite3-shm").write_bytes(b"x")
    assert recovery_written(store) == before
    (store / "part-1.sqlite3-wal").write_bytes(b"x")
    assert recovery_written(store) > before


def test_a_fork_of_a_flow_process_is_told_from_the_process_itself():
    """A recovery snapshot's child shares its parent's pages: its RSS would count them twice (FlowProcesses)."""
    import psutil

    from load_tests.bench.sustained_sampling import forked

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: wait until the parent has looked
        os.read(read, 1)
        os._exit(0)
    try:
        assert forked(psutil.Process(pid))
        assert not forked(psutil.Process(os.getpid()))
    finally:
        os.write(write, b"x")
        os.waitpid(pid, 0)
        os.close(read)
        os.close(write)
