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


def test_start_waits_for_a_server_that_is_still_loading(tmp_path):
    """A restart after a full-year replay spends seconds loading the AOF: `start` waits for it (and knows a refused
    port, a server still loading, and a ready one apart) instead of failing after its plain start timeout."""
    import socket

    from pantry.redis_server import _probe

    port = free_port()
    assert _probe(port) == "down"
    busy = socket.socket()  # accepts connections, never answers: what a server reading its AOF tail looks like
    busy.bind(("127.0.0.1", 0))
    busy.listen(4)
    try:
        assert _probe(busy.getsockname()[1]) == "loading"
    finally:
        busy.close()

    server = EmbeddedRedis(port=port, directory=tmp_path / "r").start()
    try:
        client = redis.Redis(port=port)
        payload = b"x" * 1000
        for i in range(0, 300_000, 10_000):  # ~300 MB in the AOF: seconds of loading at the next start
            client.mset({f"k{j}": payload for j in range(i, i + 10_000)})
        assert _probe(port) == "ready"
        server.stop()
        started = time.monotonic()
        again = EmbeddedRedis(port=port, directory=tmp_path / "r").start(timeout_s=0.2)
        took = time.monotonic() - started
        assert client.dbsize() == 300_000
        again.stop()
        assert took > 0.2  # it did wait past the plain start timeout, because the server said it was loading
    finally:
        server.stop()
