"""The async round trip (pantry.featurestore.roundtrip.RawPipeline) on the real embedded Redis: replies in order,
errors drop connections, and connections the server closed behind our back replaced without failing the request."""

from __future__ import annotations

import asyncio

import pytest
import redis

from pantry.featurestore.roundtrip import RawPipeline
from pantry.redis_server import sync_client


def _run(coro):
    return asyncio.run(coro)


def test_replies_in_command_order_and_connections_reused(settings):
    client = sync_client(settings)
    client.hset("test:rio:h", mapping={"a": "1", "b": "2"})
    client.set("test:rio:s", "x")

    async def scenario() -> tuple[list, list, int]:
        pipe = RawPipeline(settings.effective_redis_url(), read_timeout_s=2.0, connect_timeout_s=2.0)
        try:
            first = await pipe.run([(b"GET", b"test:rio:s"), (b"HMGET", b"test:rio:h", b"b", b"zz", b"a"),
                                    (b"GET", b"test:rio:missing")] * 50)
            second = await asyncio.gather(*(pipe.run([(b"GET", b"test:rio:s")]) for _ in range(20)))
            return first, second, pipe._open
        finally:
            await pipe.aclose()

    first, second, open_count = _run(scenario())
    assert first[:3] == [b"x", [b"2", None, b"1"], None] and len(first) == 150 and first[147:] == first[:3]
    assert all(r == [b"x"] for r in second)
    assert 1 <= open_count <= 20  # concurrent calls each hold one; sequential calls share


def test_reply_error_raises_and_drops_the_connection(settings):
    sync_client(settings).set("test:rio:str", "v")

    async def scenario() -> int:
        pipe = RawPipeline(settings.effective_redis_url(), read_timeout_s=2.0, connect_timeout_s=2.0)
        try:
            with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
                await pipe.run([(b"GET", b"test:rio:str"), (b"HGET", b"test:rio:str", b"f"), (b"GET", b"x")])
            assert await pipe.run([(b"GET", b"test:rio:str")]) == [b"v"]  # a fresh connection, not the half-read one
            return pipe._open
        finally:
            await pipe.aclose()

    assert _run(scenario()) == 1


def test_connections_closed_by_the_server_are_replaced_without_an_error(settings):
    client = sync_client(settings)
    client.set("test:rio:k", "1")

    async def scenario() -> list:
        pipe = RawPipeline(settings.effective_redis_url(), read_timeout_s=2.0, connect_timeout_s=2.0)
        try:
            await asyncio.gather(*(pipe.run([(b"GET", b"test:rio:k")]) for _ in range(5)))
            ids = [c.get("id") for c in client.client_list() if c.get("name", "") == "" and c.get("cmd") == "get"]
            assert ids, "expected the pipeline's idle connections in CLIENT LIST"
            for cid in ids:  # what a Redis restart does to every idle connection
                client.client_kill_filter(_id=cid)
            return [await pipe.run([(b"GET", b"test:rio:k")]) for _ in range(3)] + [pipe._open]
        finally:
            await pipe.aclose()

    *replies, open_count = _run(scenario())
    assert replies == [[b"1"]] * 3
    assert open_count == 1


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_late_loop_is_not_a_redis_timeout(settings, loop):
    """The loop is blocked past the read timeout while the reply sits in the socket: the reply is still taken."""
    import time

    sync_client(settings).set("test:rio:late", "ok")

    async def scenario() -> list:
        pipe = RawPipeline(settings.effective_redis_url(), read_timeout_s=0.05, connect_timeout_s=2.0)
        try:
            await pipe.run([(b"PING",)])  # connected before the test

            async def block_the_loop() -> None:
                time.sleep(0.2)  # a CPU-bound stretch of another request (or a descheduled process)

            # runs as soon as `run` waits for the replies, before the loop polls the socket again
            blocker = asyncio.create_task(block_the_loop())
            replies = await pipe.run([(b"GET", b"test:rio:late")] * 3)
            await blocker
            return replies
        finally:
            await pipe.aclose()

    if loop == "uvloop":
        import uvloop

        assert uvloop.run(scenario()) == [b"ok"] * 3
    else:
        assert asyncio.run(scenario()) == [b"ok"] * 3


def test_redis_that_does_not_answer_is_a_timeout(settings):
    """A server that accepts connections but never answers: TimeoutError within the connect + read timeouts (the
    handshake after the TCP connect is bounded too), never a hang."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]

    async def scenario() -> float:
        pipe = RawPipeline(f"redis://127.0.0.1:{port}/0", read_timeout_s=0.05, connect_timeout_s=0.1)
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            with pytest.raises(TimeoutError):
                await pipe.run([(b"GET", b"x")])
            return loop.time() - start
        finally:
            await pipe.aclose()

    try:
        took = _run(scenario())
    finally:
        listener.close()
    assert 0.1 <= took < 0.5
