"""A built state's Redis for an experiment: the settings of PANTRY_DATA_DIR (e.g. .pantry/bench, which `make bench`
builds) with its embedded Redis started on a free port for the block, and stopped after it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from pantry.redis_server import EmbeddedRedis, free_port
from pantry.settings import Settings, from_env


@contextmanager
def own_redis(**env: str) -> Iterator[Settings]:
    """`env`: more environment defaults for the settings (e.g. PANTRY_CLOCK="event")."""
    os.environ.pop("REDIS_URL", None)  # this state's own Redis, never a shared one
    os.environ.setdefault("PANTRY_REDIS_PORT", str(free_port()))
    for name, value in env.items():
        os.environ.setdefault(name, value)
    settings = from_env()
    redis = EmbeddedRedis(port=settings.embedded_redis_port, directory=settings.redis_dir).start(daemonize=False)
    try:
        yield settings
    finally:
        redis.stop()
