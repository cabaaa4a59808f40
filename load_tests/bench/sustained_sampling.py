"""What the sustained bench (load_tests/bench/sustained.py) samples each second, and the Redis a run has of its own:
the live flow's processes (CPU, RSS), its neighbours' CPU (Redis, the generator), Redis's AOF rewrites and the
flow's recovery snapshots."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path


def own_redis(settings):
    """A fresh embedded Redis for one run: the harness's holds the whole bench's data (~1 GB of AOF), whose
    rewrites (a child process writing all of it, 4-7 s of a core each, ~every 90 s under this load) landed in
    runs at times set by what ran before (docs/DECISIONS.md "The sustained bench's own Redis"). The run's own
    data still grows its AOF, and its rewrites are recorded (Sample.rewriting)."""
    from pantry.redis_server import EmbeddedRedis, free_port

    directory = settings.data_dir / "bench-sustained-redis"
    shutil.rmtree(directory, ignore_errors=True)
    return EmbeddedRedis(port=free_port(), directory=directory).start(daemonize=False)


def rewriting(client) -> bool:
    """Is Redis rewriting its AOF (a child process writing the whole dataset, on the same cores)?"""
    return bool(client.info("persistence").get("aof_rewrite_in_progress"))


def recovery_written(directory: Path) -> float:
    """When the flow last wrote its recovery store (the newest modification time of its files; 0: none yet). Bytewax
    writes it only at the end of an epoch (live: every 300 s, streaming.runner), so a change between two samples is
    a recovery snapshot: the flow's sources read nothing until every process has written its own."""
    try:  # the databases and their write-ahead logs: a reader (the stream's trim) may touch the shared-memory index
        return max((entry.stat().st_mtime for entry in os.scandir(directory)
                    if entry.name.endswith((".sqlite3", ".sqlite3-wal"))), default=0.0)
    except OSError:  # not made yet
        return 0.0


class FlowProcesses:
    """The live flow's processes (the CLI's and its children): CPU seconds and RSS."""

    def __init__(self, pid: int):
        import psutil

        self.root = psutil.Process(pid)

    def sample(self) -> tuple[float | None, float | None, dict[str, float]]:
        """Total CPU seconds, total RSS MB, and each process's CPU seconds by its pid (the CLI's process is the
        flow's process 0: the source and the gate run there)."""
        import psutil

        cpu, rss, each = 0.0, 0.0, {}
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return None, None, {}
        for p in procs:
            try:
                t = p.cpu_times()
                used = t.user + t.system + t.children_user + t.children_system
                cpu += used
                each[f"pid{p.pid}"] = used
                if not forked(p):  # a fork's pages are its parent's until either writes them: counted once
                    rss += p.memory_info().rss
            except psutil.Error:
                continue
        return cpu, rss / 2**20, each


def forked(p) -> bool:
    """Is `p` a fork of its parent (a recovery snapshot's child, retention's reader: the same command line)?"""
    parent = p.parent()
    return parent is not None and p.cmdline() == parent.cmdline()


class Neighbours:
    """CPU seconds of what shares the machine with the flow: Redis (its server process, and its AOF rewrites' child
    processes once ended) and this generator."""

    def __init__(self, redis_pid: int):
        import psutil

        try:
            self.redis: psutil.Process | None = psutil.Process(redis_pid)
        except psutil.Error:  # a Redis elsewhere: not this machine's
            self.redis = None

    def sample(self) -> dict[str, float]:
        import psutil

        out = {"generator": time.process_time()}
        if self.redis is not None:
            try:
                t = self.redis.cpu_times()
                out["redis"] = t.user + t.system + t.children_user + t.children_system
            except psutil.Error:
                pass
        return out
