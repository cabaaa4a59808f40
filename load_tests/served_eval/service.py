"""One `pantry demo --until CUT` per cut: its own data directory, artifacts, free ports and embedded Redis.

The demo sets itself up (load, feast apply, replay up to the cut, train at the cut, API keys, campaign approvals;
steps already done in that directory are skipped) and serves with the live dataflow; it is used once /readyz
answers 200 and stopped with SIGTERM to its process group (the demo stops what it started, Redis included).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import msgspec

from load_tests.server import background, pantry_command
from pantry.demo import demo_keys_env
from pantry.redis_server import embedded, free_port
from pantry.settings import Settings, subprocess_env

READY_TIMEOUT_S = 3600.0  # a first build (load, replay, train) on a busy 2-core machine


@dataclass(frozen=True)
class Served:
    cut: str
    base_url: str
    client_key: str
    settings: Settings  # the cut's: its data directory (dataset, registry) and artifacts
    ready_s: float  # from the start of `pantry demo` to /readyz 200 (build steps included when not done yet)


def cut_settings(settings: Settings, root: Path, cut: str) -> Settings:
    data_dir = (root / cut).resolve()
    return msgspec.structs.replace(settings, data_dir=data_dir, artifacts_dir=data_dir / "artifacts", redis_url=None,
                                   embedded_redis_port=free_port(), host="127.0.0.1", port=free_port(),
                                   api_keys=(), api_keys_file=None, access_log="off")


def client_key(settings: Settings) -> str:
    env = demo_keys_env(settings)
    for line in env.read_text().splitlines():
        if line.startswith("PANTRY_CLIENT_KEY="):
            return line.split("=", 1)[1].strip()
    raise RuntimeError(f"no PANTRY_CLIENT_KEY in {env}")


@contextmanager
def demo_at(settings: Settings, root: Path, cut: str) -> Iterator[Served]:
    """`pantry demo --until CUT` under root/CUT, serving on a free port until the block ends."""
    mine = cut_settings(settings, root, cut)
    mine.data_dir.mkdir(parents=True, exist_ok=True)
    env = subprocess_env(mine)
    for name in ("REDIS_URL", "PANTRY_API_KEYS_FILE", "PANTRY_CLIENT_KEY"):
        env.pop(name, None)
    env.update(PANTRY_HOST=mine.host, PANTRY_PORT=str(mine.port), PANTRY_ACCESS_LOG="off")
    base_url = f"http://{mine.host}:{mine.port}"
    log = mine.data_dir / "demo.log"
    started = time.perf_counter()
    try:
        with background(pantry_command("demo", "--until", cut), env, base_url, log, "/readyz", READY_TIMEOUT_S):
            yield Served(cut, base_url, client_key(mine), mine, time.perf_counter() - started)
    finally:
        redis = embedded(mine)
        if redis.running:  # the demo was killed before it could stop its Redis (it had 15 s to stop)
            redis.stop()
