"""The embedded Redis: starts, is reused, keeps acknowledged writes across a crash (AOF everysec)."""

import time

import redis

from pantry.redis_server import EmbeddedRedis, free_port


def test_embedded_redis_survives_sigkill_with_aof(tmp_path):
    port = free_port()
    server = EmbeddedRedis(port=port, directory=tmp_path / "r").start()
    try:
        client = redis.Redis(port=port)
        client.set("acked", "yes")
        client.xadd("pantry:events", {b"e": b"payload"})
        time.sleep(1.5)  # appendfsync everysec: a write older than ~1 s is on disk
        server.kill()
        again = EmbeddedRedis(port=port, directory=tmp_path / "r").start()
        assert redis.Redis(port=port).get("acked") == b"yes"
        assert redis.Redis(port=port).xlen("pantry:events") == 1
        # a second start on the same port reuses the running server instead of failing
        reused = EmbeddedRedis(port=port, directory=tmp_path / "r").start()
        assert not reused.started_here
        again.stop()
        assert not again.running
    finally:
        server.stop()
