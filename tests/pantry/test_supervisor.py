"""pantry.supervisor with real processes (small Python children): a killed child is restarted with its count and
exit reason logged, a child dying in a loop backs off instead of spinning, SIGTERM stops every child and what they
started (escalating to SIGKILL), and children do not outlive a SIGKILLed supervisor."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil

from pantry.supervisor import Child, Supervisor, service_children

PY = sys.executable
SLEEPER = [PY, "-c", "import time; time.sleep(60)"]


def _gone(pids: list[int], timeout_s: float = 5.0) -> list[int]:
    """The pids still alive (not zombies) after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def test_a_killed_child_is_restarted_with_its_count_and_exit_reason():
    lines: list[str] = []
    sup = Supervisor([Child("sleeper", SLEEPER)], backoff_s=0.1, log=lines.append).start()
    try:
        child = sup.children[0]
        first = child.pid
        os.kill(first, signal.SIGKILL)
        assert sup.wait_until(lambda: child.pid not in (None, first), 5), lines
        second = child.pid
        assert child.restarts == 1 and child.last_exit == "killed by SIGKILL"
        assert any("sleeper" in line and "killed by SIGKILL" in line and "restart 1 in 0.1 s" in line
                   for line in lines), lines
    finally:
        assert sup.shutdown() == 0, lines
    assert _gone([second]) == []


def test_a_child_dying_in_a_loop_backs_off_and_is_reported():
    lines: list[str] = []
    starts: list[float] = []
    sup = Supervisor([Child("crasher", [PY, "-c", "import sys; sys.exit(3)"])], backoff_s=0.1, backoff_max_s=0.4,
                     stable_s=10, log=lambda line: (lines.append(line), line.startswith("started") and
                                                    starts.append(time.monotonic())))
    sup.start()
    try:
        sup.wait_until(lambda: False, 3.0, every_s=0.02)
    finally:
        sup.shutdown()
    child = sup.children[0]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # 0.1, 0.2, 0.4, 0.4, ... (+ the child's own start-up): a handful of starts in 3 s, never a hot loop
    assert 4 <= len(starts) <= 12, (len(starts), gaps)
    assert gaps[0] >= 0.1 and all(g >= 0.4 for g in gaps[2:]), gaps
    assert child.last_exit == "exited with status 3"
    assert any("CRASH LOOP" in line for line in lines), lines


SUPERVISED = textwrap.dedent("""
    import sys
    from pantry.supervisor import Child, Supervisor, service_children
    PY = sys.executable
    sys.exit(Supervisor([
        # leaves a grandchild behind when it dies
        Child("parent", [PY, "-c", "import subprocess, time; subprocess.Popen(['sleep', '60']); time.sleep(60)"]),
        # ignores SIGTERM: killed after stop_timeout_s
        Child("stubborn", [PY, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                                     "print('ready', flush=True); time.sleep(60)"]),
    ], stop_timeout_s=1.0).run())
""")


def _tree(pid: int, n: int, timeout_s: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        kids = psutil.Process(pid).children(recursive=True)
        if len(kids) >= n:
            return [k.pid for k in kids]
        time.sleep(0.05)
    raise AssertionError(f"supervisor {pid} has {psutil.Process(pid).children(recursive=True)}")


def test_sigterm_stops_every_child_and_what_they_started():
    proc = subprocess.Popen([PY, "-c", SUPERVISED], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        tree = _tree(proc.pid, 3)  # parent, its sleep, stubborn
        assert proc.stdout.readline().strip() == "ready"  # stubborn has set its SIGTERM handler
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = proc.stderr.read()
    assert code == 1, log  # one child had to be killed
    assert "stubborn" in log and "SIGKILL to its process group" in log, log
    assert _gone(tree) == [], log


def test_children_do_not_outlive_a_killed_supervisor():
    script = "import sys; from pantry.supervisor import Child, Supervisor, service_children; " \
             f"Supervisor([Child('a', {SLEEPER!r}), Child('b', {SLEEPER!r})]).run()"
    proc = subprocess.Popen([PY, "-c", script], stderr=subprocess.DEVNULL)
    try:
        tree = _tree(proc.pid, 2)
        proc.kill()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _gone(tree) == []  # PR_SET_PDEATHSIG: SIGTERM when the supervisor dies


def test_the_embedded_redis_is_taken_over_from_the_daemon_and_restarted_after_sigkill(tmp_path):
    """`pantry serve`/`pantry demo`: a daemonized embedded Redis (the demo's set-up steps) is shut down with its data
    kept and runs on as a supervised child; SIGKILLed, it is back within a second with what its AOF had."""
    import redis

    from pantry.redis_server import EmbeddedRedis, free_port
    from pantry.settings import Settings
    from pantry.supervisor import supervise_redis

    settings = Settings(data_dir=tmp_path, embedded_redis_port=free_port())
    daemon = EmbeddedRedis(settings.embedded_redis_port, settings.redis_dir).start(daemonize=True)
    client = redis.Redis(port=settings.embedded_redis_port, socket_timeout=2)
    client.set("before", "1")
    daemon_pid = int(daemon.pidfile.read_text())
    lines: list[str] = []
    sup = Supervisor([], log=lines.append).start()
    try:
        assert supervise_redis(settings, sup, 30), lines
        child = sup.children[0]
        assert child.name == "redis" and child.pid not in (None, daemon_pid)
        assert _gone([daemon_pid]) == []
        assert int(daemon.pidfile.read_text()) == child.pid
        assert client.get("before") == b"1"  # SHUTDOWN flushed it, the supervised server read it back
        assert any("taken over" in line for line in lines), lines
        client.set("acknowledged", "2")
        time.sleep(1.5)  # appendfsync everysec
        first = child.pid
        os.kill(first, signal.SIGKILL)
        t0 = time.monotonic()
        assert sup.wait_until(lambda: child.pid not in (None, first) and daemon.running, 10, every_s=0.05), lines
        assert time.monotonic() - t0 < 2.0
        assert child.restarts == 1 and child.last_exit == "killed by SIGKILL"
        assert client.get("acknowledged") == b"2"
        second = child.pid
    finally:
        assert sup.shutdown() == 0, lines
        daemon.stop()
    assert _gone([second]) == [] and not daemon.running


# lower_priority(7), then the niceness and the scheduling group's niceness ("none": the root group, which has no
# autogroup line, or a kernel without autogroup)
LOWER_AND_REPORT = (
    "import os, pathlib; from pantry.supervisor import lower_priority; print(lower_priority(7)); print(os.nice(0)); "
    "p = pathlib.Path('/proc/self/autogroup'); t = p.read_text().split() if p.exists() else []; "
    "print(t[-1] if t else 'none')")


def test_lower_priority_lowers_the_process_and_its_session_group() -> None:
    """The live flow runs in a session of its own; with sched_autogroup on, only the group's niceness weighs against
    the API's processes, so both are set."""
    out = subprocess.run([PY, "-c", LOWER_AND_REPORT], capture_output=True, text=True, check=True,
                         start_new_session=True).stdout.split("\n")
    assert int(out[1]) >= 7
    if out[2] != "none":
        assert out[0] == "nice +7 (process and its scheduling group)" and out[2] == "7"


# lower_priority(7), shorter_slice(200), then the niceness and the slice of a thread started afterwards (as Bytewax
# starts its workers after the CLI set both)
SLICE_AND_REPORT = (
    "import os, threading; from pantry.supervisor import lower_priority, shorter_slice; lower_priority(7); "
    "print(shorter_slice(200)); print(os.nice(0)); out = []; "
    "t = threading.Thread(target=lambda: out.append(open(f'/proc/self/task/{threading.get_native_id()}/sched')"
    ".read())); t.start(); t.join(); "
    "print(next((line.split(':')[1].strip() for line in out[0].splitlines() if line.startswith('se.slice')), 'none'))")


def test_shorter_slice_reaches_later_threads_and_keeps_the_niceness() -> None:
    """The flow's threads get the short slice (inherited from the thread that asked), and sched_setattr, which also
    sets the niceness, leaves lower_priority's in place. A kernel without custom slices (before 6.12) keeps its
    default and says so."""
    out = subprocess.run([PY, "-c", SLICE_AND_REPORT], capture_output=True, text=True, check=True,
                         start_new_session=True).stdout.split("\n")
    assert int(out[1]) >= 7
    if out[0] == "slice 200 us":
        assert out[2] == "200000"  # nanoseconds
    else:
        assert out[0].startswith("default slice (")


def test_lower_priority_leaves_a_shared_session_alone() -> None:
    """A flow started in someone else's session (a terminal, a test runner) lowers only itself: renicing the session's
    scheduling group would slow everything else started from that terminal."""
    group = Path("/proc/self/autogroup")
    fields = group.read_text().split() if group.exists() else []  # empty where the kernel runs without autogroup
    before = fields[-1] if fields else "none"
    out = subprocess.run([PY, "-c", LOWER_AND_REPORT], capture_output=True, text=True, check=True).stdout.split("\n")
    assert int(out[1]) >= 7
    assert out[0] == "nice +7 (its session is shared: the session's group keeps its priority)"
    assert out[2] == before  # this test's own session group: unchanged


def test_serve_runs_the_live_flow_with_its_processes_setting() -> None:
    one, two = (next(c for c in service_children(2, "127.0.0.1", 8000, True, live_processes=n) if c.name == "live flow")
                for n in (1, 2))
    assert "--processes" not in one.argv and two.argv[-2:] == ["--processes", "2"]
    assert all(c.name != "live flow" for c in service_children(2, "127.0.0.1", 8000, False, live_processes=2))
