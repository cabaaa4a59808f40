"""What a 202 on /v1/events guarantees, read from the real Redis (pantry.health.durability), and checked: with the
embedded Redis's AOF (everysec) acknowledged entries survive a SIGKILL of redis-server; with AOF off they do not;
without CONFIG the report says "unknown"; PANTRY_REQUIRE_AOF=1 refuses to serve on a Redis without AOF."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from pantry.health import durability
from pantry.keys import EVENTS_STREAM
from pantry.redis_server import EmbeddedRedis, free_port


@pytest.fixture()
def scratch_redis(tmp_path: Path):
    server = EmbeddedRedis(port=free_port(), directory=tmp_path / "redis").start(daemonize=False)
    yield server
    server.kill()


def _client(server: EmbeddedRedis) -> redis.Redis:
    return redis.Redis(port=server.port, socket_timeout=5)


def _crash_and_count(server: EmbeddedRedis, n: int = 200) -> int:
    """XADD n entries (each acknowledged), SIGKILL redis-server at once, start it again: entries left."""
    client = _client(server)
    for i in range(n):
        client.xadd(EVENTS_STREAM, {b"e": str(i).encode()})
    server.kill()
    server.start(daemonize=False)
    return _client(server).xlen(EVENTS_STREAM)


def test_the_embedded_redis_has_aof_everysec_and_acknowledged_events_survive_its_crash(scratch_redis):
    report = durability(_client(scratch_redis))
    assert (report.appendonly, report.appendfsync) == ("yes", "everysec")
    assert "survive a Redis crash" in report.guarantee and "~1 s" in report.guarantee
    assert _crash_and_count(scratch_redis) == 200


def test_aof_off_is_reported_and_a_crash_loses_the_events(scratch_redis):
    client = _client(scratch_redis)
    client.config_set("appendonly", "no")
    report = durability(client)
    assert report.appendonly == "no" and not report.aof
    assert report.guarantee.startswith("AOF is off: a Redis crash loses the events acknowledged since the start "
                                       "(no RDB saves are configured)")
    assert _crash_and_count(scratch_redis) == 0  # restarted from its config file (AOF on): nothing was logged


class NoConfigRedis(EmbeddedRedis):
    def config_lines(self) -> list[str]:
        return [*super().config_lines(), 'rename-command CONFIG ""']  # as managed Redis services do


def test_without_config_the_guarantee_is_unknown(tmp_path):
    server = NoConfigRedis(port=free_port(), directory=tmp_path / "redis").start(daemonize=False)
    try:
        report = durability(_client(server))
    finally:
        server.kill()
    assert (report.appendonly, report.appendfsync) == ("unknown", "unknown")
    assert report.guarantee.startswith("unknown: CONFIG is disabled")


def test_require_aof_refuses_to_serve_without_aof(scratch_redis, tmp_path):
    _client(scratch_redis).config_set("appendonly", "no")
    env = {**os.environ, "REDIS_URL": scratch_redis.url, "PANTRY_DATA_DIR": str(tmp_path / "data"),
           "PANTRY_REQUIRE_AOF": "1", "PANTRY_PORT": str(free_port())}
    done = subprocess.run([sys.executable, "-m", "pantry.cli", "serve"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2, done.stderr
    assert "appendonly no" in done.stderr and "refusing" in done.stderr, done.stderr
    assert "AOF is off" in done.stderr  # the durability line came first
