"""One pipelined round trip on redis-py's async connection pool, without redis-py's per-command pipeline machinery.

redis-py's Pipeline packs every command in Python and reads every reply under its own timeout context: for a
substitution request (~60 HMGETs) that was ~70% of the request's CPU (cProfile, process time). Here the commands
are packed by hiredis (C), sent in one write, and the replies are read by redis-py's hiredis parser under ONE
timeout that starts once everything has been sent (like a socket timeout: time queued on a busy event loop before
the send does not count). Connections come from, and go back to, a redis-py ConnectionPool.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import hiredis
import redis.asyncio

Command = tuple[bytes | str | int | float, ...]


class RawPipeline:
    def __init__(self, url: str, read_timeout_s: float, connect_timeout_s: float, max_connections: int = 512):
        # socket_timeout=None: the connection must not start its own timer per reply; `run` bounds the whole read
        self.pool = redis.asyncio.ConnectionPool.from_url(
            url, socket_timeout=None, socket_connect_timeout=connect_timeout_s, max_connections=max_connections)
        self.read_timeout_s = read_timeout_s

    async def run(self, commands: Sequence[Command], timeout_s: float | None = None) -> list[Any]:
        """The replies in command order. A reply error (WRONGTYPE, ...) raises redis ResponseError, a connection error
        or the read timeout (TimeoutError) raises as it comes; either way the connection is dropped, not reused."""
        packed = b"".join([hiredis.pack_command(c) for c in commands])
        conn = await self.pool.get_connection()
        try:
            await conn.send_packed_command(packed, check_health=False)
            async with asyncio.timeout(timeout_s or self.read_timeout_s):
                replies = [await conn.read_response() for _ in range(len(commands))]
        except BaseException:
            # a half-read connection must never serve another request
            await conn.disconnect(nowait=True)
            raise
        finally:
            await self.pool.release(conn)
        return replies

    async def aclose(self) -> None:
        await self.pool.aclose()
