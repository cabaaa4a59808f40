"""The product as a user runs it: `pantry demo` (on a prepared data dir of its own), and the processes it started.

The data dir `.pantry/chaos` is prepared once with `pantry demo --no-serve --households N` (later runs skip what is
done), and what a run changes (Redis's files, the flow's recovery store, the feature log) is copied aside then and
put back before each run, so every run starts from the same state (a hostile burst may have moved the event clock);
every run picks free ports. `Stack.processes()` finds the embedded redis-server (its pidfile), the live
dataflow (`pantry stream live`) and the serving workers (children of the supervised `pantry serve --api-only`) among
the demo's descendants.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from load_tests import server
from load_tests.bench.harness import isolated_settings
from pantry.redis_server import EmbeddedRedis
from pantry.settings import Settings, subprocess_env

HOUSEHOLDS = 400
RUN_STATE = ("redis", "stream", "feature_log")  # what a run changes under the data dir


def chaos_settings() -> Settings:
    return isolated_settings("chaos", PANTRY_ACCESS_LOG="off")


def _cmd(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return ""


@dataclass
class Stack:
    settings: Settings
    log: Path
    demo: subprocess.Popen | None = None
    extra: list[subprocess.Popen] = field(default_factory=list)  # what the harness itself had to restart

    @property
    def base_url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port}"

    @property
    def redis(self) -> EmbeddedRedis:
        return EmbeddedRedis(port=self.settings.embedded_redis_port, directory=self.settings.redis_dir)

    def prepare(self) -> None:
        """Data, feast apply, replay, models, campaigns (idempotent: a prepared dir takes seconds)."""
        with self.log.open("ab") as out:
            result = subprocess.run(server.pantry_command("demo", "--no-serve", "--households", str(HOUSEHOLDS)),
                                    env=subprocess_env(self.settings), stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, timeout=900)
        if result.returncode != 0:
            raise RuntimeError(f"pantry demo --no-serve exited with {result.returncode} (see {self.log})")
        pristine = self.settings.data_dir / "pristine"
        if not pristine.exists():  # Redis is stopped: `pantry demo --no-serve` stops what it started
            for name in RUN_STATE:
                shutil.copytree(self.settings.data_dir / name, pristine / name)

    def restore(self) -> None:
        """The run state as it was right after the preparation."""
        pristine = self.settings.data_dir / "pristine"
        for name in RUN_STATE:
            shutil.rmtree(self.settings.data_dir / name, ignore_errors=True)
            shutil.copytree(pristine / name, self.settings.data_dir / name)

    def start(self, timeout_s: float = 180.0) -> None:
        env = subprocess_env(self.settings)
        env["PANTRY_PORT"] = str(self.settings.port)
        with self.log.open("ab") as out:
            self.demo = subprocess.Popen(server.pantry_command("demo", "--households", str(HOUSEHOLDS)), env=env,
                                         stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        server.wait_until_answers(self.base_url, self.demo, timeout_s, self.log, "/readyz")

    def descendants(self) -> list[psutil.Process]:
        roots = [] if self.demo is None or self.demo.poll() is not None else [psutil.Process(self.demo.pid)]
        roots += [psutil.Process(p.pid) for p in self.extra if p.poll() is None]
        found = []
        for root in roots:
            try:
                found += [root, *root.children(recursive=True)]
            except psutil.Error:
                pass
        return found

    def redis_pid(self) -> int | None:
        try:
            pid = int(self.redis.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if psutil.pid_exists(pid) and "redis-server" in _cmd(psutil.Process(pid)) else None

    def flow_pids(self) -> list[int]:
        return [p.pid for p in self.descendants() if "stream live" in _cmd(p)]

    def worker_pids(self) -> list[int]:
        """granian's worker processes: the children of the supervised API (`pantry serve --api-only`)."""
        api = [p for p in self.descendants() if "serve --api-only" in _cmd(p)]
        parents = [p for p in api if not any(q.pid == p.ppid() for q in api)]
        return [c.pid for p in parents for c in p.children() if "resource_tracker" not in _cmd(c)]

    def demo_alive(self) -> bool:
        return self.demo is not None and self.demo.poll() is None

    def restart_redis(self) -> None:
        """What an operator would do: start the embedded Redis again on its data (AOF)."""
        self.redis.start(daemonize=True)

    def restart_flow(self) -> None:
        with self.log.open("ab") as out:
            self.extra.append(subprocess.Popen(server.pantry_command("stream", "live", "--no-progress"),
                                               env=subprocess_env(self.settings), stdout=out,
                                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                               start_new_session=True))

    def stop(self) -> None:
        for proc in [*self.extra, *([self.demo] if self.demo else [])]:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc in [*self.extra, *([self.demo] if self.demo else [])]:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        if self.redis_pid() is not None:
            self.redis.stop()


def wait_for(check, timeout_s: float, every_s: float = 0.2) -> float | None:
    """Seconds until check() is true, None if not within timeout_s."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if check():
            return time.monotonic() - start
        time.sleep(every_s)
    return None
