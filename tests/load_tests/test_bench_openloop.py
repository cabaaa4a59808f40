"""The bench's open-loop client against a real HTTP server that stalls: the stall shows up as latency of every
request scheduled during it (counted from the scheduled send time), not as one slow request."""

from __future__ import annotations

import asyncio

from load_tests.bench.openloop import closed_loop, open_loop

STALL_S = 0.3


async def serve(stall_at: int | None, fail_every: int | None = None,
                heads: list[bytes] | None = None) -> tuple[asyncio.Server, str]:
    seen = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal seen
        while True:
            head = await reader.readuntil(b"\r\n\r\n") if not reader.at_eof() else b""
            if not head:
                break
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length")), 0)
            await reader.readexactly(length)
            seen += 1
            if heads is not None:
                heads.append(head)
            if seen == stall_at:
                await asyncio.sleep(STALL_S)
            status = b"500 Internal Server Error" if fail_every and seen % fail_every == 0 else b"200 OK"
            writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 2\r\n\r\n{}")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


async def run_open_loop(stall_at: int | None, fail_every: int | None = None):
    server, url = await serve(stall_at, fail_every)
    async with server:
        return await open_loop(url, "/x", lambda: b"{}", rate=200.0, duration_s=1.0, max_conns=1)


async def test_a_stall_is_latency_for_every_request_scheduled_during_it():
    steady = await run_open_loop(stall_at=None)
    stalled = await run_open_loop(stall_at=20)
    assert steady.requests == stalled.requests == 200 and steady.errors == stalled.errors == 0
    assert steady.p99_ms < 100
    # ~60 requests were due during the 300 ms stall on the one connection: they waited, from their send time on
    assert stalled.max_ms >= STALL_S * 1000 * 0.9
    assert stalled.p99_ms >= 200


async def test_errors_are_counted_and_kept_out_of_the_latencies():
    load = await run_open_loop(stall_at=None, fail_every=10)
    assert load.errors == 20 and load.error_statuses == {500: 20}
    assert load.achieved_rps == 180.0  # answered requests only


async def test_closed_loop_sends_as_fast_as_answers_come():
    server, url = await serve(stall_at=None)
    async with server:
        load = await closed_loop(url, "/x", lambda: b"{}", connections=4, duration_s=0.5)
    assert load.errors == 0 and load.requests > 200  # far above any paced rate used here


async def test_the_api_key_is_sent_with_every_request():
    heads: list[bytes] = []
    server, url = await serve(stall_at=None, heads=heads)
    async with server:
        await closed_loop(url, "/x", lambda: b"{}", connections=2, duration_s=0.2, api_key="pantry_k")
        await open_loop(url, "/x", lambda: b"{}", rate=50.0, duration_s=0.2, max_conns=1, api_key="pantry_k")
    assert heads and all(b"\r\nX-API-Key: pantry_k\r\n" in head for head in heads)
