"""A small process supervisor (stdlib only): runs commands (argv lists) as children and restarts any that dies.

`pantry serve` and `pantry demo` use it for the embedded Redis (redis-server in the foreground, when no REDIS_URL is
set), the HTTP API (`pantry serve --api-only`: granian, N workers) and the live dataflow (`pantry stream live`). It
knows commands only as argv lists, so `pantry/` imports no component.

- Each child runs in its own process group (its own session) and gets SIGTERM if the supervisor dies
  (PR_SET_PDEATHSIG), so nothing outlives the supervisor.
- A child that exits while the supervisor is not stopping is restarted after a backoff: `backoff_s`, doubled at every
  quick death (one within `stable_s` of its start), capped at `backoff_max_s`; a child that ran `stable_s` starts
  over at `backoff_s`. Each restart is logged with the child's restart count and how it ended (exit status or
  signal); from `loop_after` quick deaths in a row the child is reported as crash-looping (it is still restarted,
  at the capped pace, never hot). What is left of its process group (e.g. granian's workers) is SIGKILLed first.
  A child may have its own backoff (the embedded Redis: 0.1 s, at most 1 s: everything else waits on it).
- A child that exits with EXIT_CONFIG (78, sysexits' EX_CONFIG) refused its configuration (e.g. demo keys on a public
  address): restarting cannot help, so the supervisor stops everything and exits with that status.
- SIGTERM/SIGINT: every child gets SIGTERM (those marked `stop_last`, the embedded Redis, once the others have
  stopped: the flow's and the API's last writes reach it); a child still running after `stop_timeout_s` gets SIGKILL
  on its whole process group.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

EXIT_CONFIG = 78  # a child's "my configuration is refused" (sysexits.h EX_CONFIG): stop, do not restart


def pantry_argv(*args: str) -> list[str]:
    """The `pantry` console script of this interpreter, with args."""
    return [str(Path(sys.executable).with_name("pantry")), *args]


def _load_prctl():
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: the supervisor's own stop still stops its children
        return None


_PRCTL = _load_prctl()  # loaded once: the forked child only makes the call, keeping the fork-to-exec window short
PR_SET_PDEATHSIG = 1


def die_with_parent(sig: signal.Signals = signal.SIGTERM) -> Callable[[], None]:
    """A preexec_fn: `sig` to this child when the process spawning it dies. A parent killed between the fork and the
    prctl would send nothing, so the child checks that its parent is still the one that forked it."""
    parent_pid = os.getpid()

    def preexec() -> None:
        if _PRCTL is None:
            return
        _PRCTL(PR_SET_PDEATHSIG, sig)
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), sig)
    return preexec


def lower_priority(nice: int) -> str:
    """Make this process (the live flow) yield the CPU to the API's answers: `nice` added to its niceness and, where
    the kernel groups processes by session for scheduling (sched_autogroup, on by default: the flow runs in a
    session of its own, where its plain niceness would weigh only against itself), to its session's group, but only
    when the session is the flow's own (it leads it): a `pantry stream live` typed in a terminal must not renice the
    terminal's session, and with it whatever else runs there. Returns what was set, for the log."""
    if nice <= 0:
        return "normal priority"
    os.nice(nice)
    if os.getsid(0) != os.getpid():
        return f"nice +{nice} (its session is shared: the session's group keeps its priority)"
    try:
        with open("/proc/self/autogroup", "w") as group:  # the whole session: every thread Bytewax starts
            group.write(str(min(nice, 19)))
        return f"nice +{nice} (process and its scheduling group)"
    except OSError:  # no autogroup here: the process's niceness alone decides
        return f"nice +{nice}"


class _SchedAttr(ctypes.Structure):  # struct sched_attr (linux/sched/types.h)
    _fields_ = [("size", ctypes.c_uint32), ("sched_policy", ctypes.c_uint32), ("sched_flags", ctypes.c_uint64),
                ("sched_nice", ctypes.c_int32), ("sched_priority", ctypes.c_uint32),
                ("sched_runtime", ctypes.c_uint64), ("sched_deadline", ctypes.c_uint64),
                ("sched_period", ctypes.c_uint64), ("sched_util_min", ctypes.c_uint32),
                ("sched_util_max", ctypes.c_uint32)]


_SYS_SCHED_SETATTR = {"x86_64": 314, "aarch64": 274}


def shorter_slice(slice_us: int) -> str:
    """Ask the scheduler for a time slice of `slice_us` for this thread and every thread and process it starts later
    (the live flow: called before Bytewax starts its threads). Linux's EEVDF scheduler (6.6+) lets a running task
    finish its slice before a waking task of a later deadline preempts it; with the default slice (1.4 ms here) a
    burst of flow work can hold a core that long while an answer waits. A custom slice (`sched_attr.sched_runtime`
    for SCHED_OTHER, Linux 6.12+, 0.1-100 ms) ends that protection sooner and costs nothing while the cores are
    free. The niceness is passed along unchanged (sched_setattr sets it too). Returns what was set, for the log."""
    if slice_us <= 0:
        return "default slice"
    number = _SYS_SCHED_SETATTR.get(os.uname().machine)
    if number is None or not sys.platform.startswith("linux"):
        return "default slice (not Linux x86_64/aarch64)"
    attr = _SchedAttr(size=ctypes.sizeof(_SchedAttr), sched_policy=os.SCHED_OTHER,
                      sched_nice=os.getpriority(os.PRIO_PROCESS, 0), sched_runtime=slice_us * 1000)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(number, 0, ctypes.byref(attr), 0) != 0:
        return f"default slice (sched_setattr: {os.strerror(ctypes.get_errno())})"
    try:  # a kernel before 6.12 takes the call and ignores the slice: read back what the scheduler holds
        with open("/proc/thread-self/sched") as sched:
            held = next((line.split(":")[1].strip() for line in sched if line.startswith("se.slice")), None)
    except OSError:
        held = None
    if held != str(slice_us * 1000):
        return f"default slice (this kernel keeps {held or 'its own'} ns)"
    return f"slice {slice_us} us"


def exit_reason(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with status {returncode}"


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str] | None = None
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    restarts: int = 0
    quick_deaths: int = 0  # deaths in a row, each within stable_s of its start
    last_exit: str | None = None
    restart_at: float | None = None  # monotonic time of the next start while it is down
    backoff_s: float | None = None  # this child's own first backoff and cap (None: the supervisor's)
    backoff_max_s: float | None = None
    stop_last: bool = False  # stopped after every other child (the store they write to)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.poll() is None else None


@dataclass
class Supervisor:
    children: list[Child]
    backoff_s: float = 0.5
    backoff_max_s: float = 30.0
    stable_s: float = 30.0
    loop_after: int = 3
    stop_timeout_s: float = 20.0
    poll_s: float = 0.2
    log: Callable[[str], None] = field(default=lambda line: print(f"supervisor: {line}", file=sys.stderr,
                                                                   flush=True))
    _stopping: threading.Event = field(default_factory=threading.Event)
    _previous: dict = field(default_factory=dict)
    _signal: str | None = None
    config_refused: bool = False  # a child exited with EXIT_CONFIG

    # ---- life cycle -------------------------------------------------------------------------------------------

    def start(self) -> Supervisor:
        """Install the SIGTERM/SIGINT handlers and start every child."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._on_signal)
        for child in self.children:
            self._spawn(child)
        return self

    def add(self, child: Child) -> None:
        """Start one more child (after start()), supervised like the others."""
        self.children.append(child)
        self._spawn(child)

    def run(self) -> int:
        """Supervise until SIGTERM/SIGINT (or stop()), then stop every child; 0 when all stopped cleanly."""
        if not self._previous:
            self.start()
        while not self._stopping.is_set():
            self.tick()
            self._stopping.wait(self.poll_s)
        return self.shutdown()

    def wait_until(self, predicate: Callable[[], bool], timeout_s: float, every_s: float = 0.3) -> bool:
        """Supervise (restarting as needed) until predicate() holds; False on timeout or when stopping."""
        deadline = time.monotonic() + timeout_s
        while not self._stopping.is_set() and time.monotonic() < deadline:
            self.tick()
            if predicate():
                return True
            self._stopping.wait(every_s)
        return False

    def stop(self) -> None:
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # no logging here: a print interrupting a print of the main thread raises (reentrant call)
        self._signal = self._signal or signal.Signals(signum).name
        self._stopping.set()

    # ---- one round ------------------------------------------------------------------------------------------

    def tick(self) -> None:
        """Notice children that died, and start those whose backoff has passed."""
        now = time.monotonic()
        for child in self.children:
            if self._stopping.is_set():
                return
            proc = child.process
            if proc is not None and proc.poll() is not None:
                self._died(child, proc.returncode, now)
            if child.process is None and child.restart_at is not None and now >= child.restart_at:
                child.restarts += 1
                self._spawn(child)

    def _spawn(self, child: Child) -> None:
        child.process = subprocess.Popen(child.argv, env=child.env, start_new_session=True,
                                         preexec_fn=die_with_parent())
        child.started_at = time.monotonic()
        child.restart_at = None
        again = f" (restart {child.restarts})" if child.restarts else ""
        self.log(f"started {child.name}{again}: pid {child.process.pid}")

    def _died(self, child: Child, returncode: int, now: float) -> None:
        pid = child.process.pid
        child.process = None
        _kill_group(pid)  # what the child left behind in its group (granian's workers when its main was killed)
        if returncode == EXIT_CONFIG:
            self.log(f"{child.name} (pid {pid}) refused its configuration (exit {EXIT_CONFIG}): not restarted; "
                     f"stopping")
            self.config_refused = True
            self._stopping.set()
            return
        ran = now - child.started_at
        child.last_exit = exit_reason(returncode)
        child.quick_deaths = child.quick_deaths + 1 if ran < self.stable_s else 1
        first = self.backoff_s if child.backoff_s is None else child.backoff_s
        cap = self.backoff_max_s if child.backoff_max_s is None else child.backoff_max_s
        delay = min(cap, first * 2 ** (child.quick_deaths - 1))
        child.restart_at = now + delay
        line = (f"{child.name} (pid {pid}) {child.last_exit} after {ran:.1f} s; restart {child.restarts + 1} "
                f"in {delay:.1f} s")
        if child.quick_deaths >= self.loop_after:
            line += (f"; CRASH LOOP: {child.quick_deaths} deaths in a row, each within {self.stable_s:.0f} s of its "
                     f"start (retrying at most every {cap:.0f} s)")
        self.log(line)

    # ---- stopping -------------------------------------------------------------------------------------------

    def shutdown(self) -> int:
        """SIGTERM every running child (those marked stop_last after the others have stopped), SIGKILL the process
        group of any still running after stop_timeout_s."""
        self._stopping.set()
        running = [c for c in self.children if c.process is not None and c.process.poll() is None]
        self.log(f"{self._signal or 'stop'}: stopping {', '.join(c.name for c in running) or 'nothing'}")
        failed = False
        for last in (False, True):
            failed |= self._stop([c for c in running if c.stop_last == last])
        for child in self.children:
            child.process = None
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        return EXIT_CONFIG if self.config_refused else 1 if failed else 0

    def _stop(self, running: list[Child]) -> bool:
        for child in running:
            try:
                child.process.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + self.stop_timeout_s
        failed = False
        for child in running:
            proc = child.process
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.log(f"{child.name} (pid {proc.pid}) still running {self.stop_timeout_s:.0f} s after SIGTERM: "
                         f"SIGKILL to its process group")
                _kill_group(proc.pid)
                proc.wait()
                failed = True
            else:
                failed |= proc.returncode not in (0, -signal.SIGTERM)
                self.log(f"{child.name} (pid {proc.pid}) {exit_reason(proc.returncode)}")
            _kill_group(proc.pid)  # anything it left behind
        return failed


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def service_children(workers: int, host: str, port: int, live: bool,
                     env: dict[str, str] | None = None, extra: Sequence[str] = (), live_processes: int = 1
                     ) -> list[Child]:
    """What `pantry serve` runs: the API (granian, `workers` processes) and, unless the flow runs elsewhere, the
    live dataflow."""
    api = Child("api", pantry_argv("serve", "--api-only", "--workers", str(workers), "--host", host,
                                   "--port", str(port), *extra), env)
    children = [api]
    if live:
        live_argv = [sys.executable, "-m", "pantry.cli", "stream", "live", "--no-progress",
                     *(["--processes", str(live_processes)] if live_processes > 1 else [])]
        children.insert(0, Child("live flow", live_argv, env))
    return children


class RefuseToStart(RuntimeError):
    pass


def check_durability(settings, log: Callable[[str], None]):
    """One line saying what a 202 on /v1/events guarantees with the Redis events are written to; RefuseToStart when
    `PANTRY_REQUIRE_AOF=1` and AOF is not verifiably on."""
    from pantry.health import durability
    from pantry.redis_server import sync_client

    report = durability(sync_client(settings, timeout_s=5.0))
    log(f"durability of /v1/events ({settings.redis_url or 'embedded redis'}): appendonly {report.appendonly}, "
        f"appendfsync {report.appendfsync}: {report.guarantee}")
    if settings.require_aof and not report.aof:
        raise RefuseToStart(f"PANTRY_REQUIRE_AOF=1 and the events' Redis has appendonly {report.appendonly}: "
                            f"refusing to acknowledge events that a Redis crash would lose")
    return report


def redis_child(settings) -> Child:
    """The embedded redis-server in the foreground (same config, port and data dir as `pantry redis start`, AOF on),
    restarted fast: 0.1 s, at most 1 s between attempts."""
    from pantry.redis_server import embedded, redis_server_binary

    conf = embedded(settings).write_config(daemonize=False)
    return Child("redis", [str(redis_server_binary()), str(conf)], backoff_s=0.1, backoff_max_s=1.0, stop_last=True)


def _data_dir_of(server) -> Path | None:
    """Where the Redis answering on server.port keeps its data (CONFIG GET dir); None if it will not say."""
    import redis

    try:
        reply = redis.Redis(port=server.port, socket_timeout=2.0, decode_responses=True).config_get("dir")
        return Path(reply["dir"]).resolve()
    except (redis.RedisError, KeyError):
        return None


def supervise_redis(settings, sup: Supervisor, timeout_s: float = 300.0) -> bool:
    """Run the embedded Redis as `sup`'s child: a daemonized one of this data dir already on the port (the demo's
    set-up steps, `pantry redis start`) is shut down first (SHUTDOWN: its AOF flushed), then the supervised one
    starts on the same data dir and port; a Redis of another data dir on the port is used as it is, unsupervised.
    True once it answers (loading its AOF may take seconds); False on timeout or when stopping. The caller must have
    started `sup`."""
    from pantry.redis_server import embedded, wait_port_free

    server = embedded(settings)
    if server.running:
        running_dir = _data_dir_of(server)
        if running_dir != server.directory.resolve():
            # not this data dir's embedded Redis (another pantry, a test's server): never shut someone else's down
            sup.log(f"a Redis with its data in {running_dir} already answers on port {server.port}, not this data "
                    f"dir's ({server.directory}): using it as it is, unsupervised")
            return True
        started = time.monotonic()
        server.stop()
        if not wait_port_free(server.port, 10.0):
            raise RefuseToStart(f"the embedded Redis on port {server.port} did not stop (SHUTDOWN) within 10 s")
        sup.log(f"embedded redis on port {server.port} taken over: the daemonized server was shut down (AOF "
                f"flushed) in {time.monotonic() - started:.1f} s and runs supervised from here")
    started = time.monotonic()
    sup.add(redis_child(settings))
    if not sup.wait_until(lambda: server.running, timeout_s, every_s=0.05):
        return False
    sup.log(f"embedded redis answering on port {server.port} after {time.monotonic() - started:.1f} s")
    return True


def serve(settings, workers: int, host: str, port: int, live: bool,
          on_started: Callable[[Supervisor], None] | None = None) -> int:
    """`pantry serve`: the embedded Redis (when no REDIS_URL is set) as a supervised child, the events' Redis checked
    (durability line, PANTRY_REQUIRE_AOF), then the API and (unless `live` is False) the live dataflow, supervised
    until SIGTERM/SIGINT. `on_started` runs once every child has been started (the demo waits for readiness there,
    supervising meanwhile)."""
    from pantry.settings import subprocess_env

    sup = Supervisor([], backoff_max_s=settings.restart_backoff_max_s)
    sup.start()
    try:
        if not settings.redis_url and not supervise_redis(settings, sup):
            sup.log("the embedded redis did not answer: stopping")
            return sup.shutdown() or 1
        check_durability(settings, sup.log)
    except RefuseToStart as exc:
        sup.log(str(exc))
        sup.shutdown()
        return 2
    if not live:
        sup.log("the live dataflow is not run here (--no-live / PANTRY_SERVE_LIVE=0): /readyz judges it by its "
                "heartbeat in Redis")
    for child in service_children(workers, host, port, live, env=subprocess_env(settings),
                                  live_processes=settings.live_processes):
        sup.add(child)
    try:
        if on_started is not None:
            on_started(sup)
    except BaseException:
        sup.shutdown()
        raise
    return sup.run()
