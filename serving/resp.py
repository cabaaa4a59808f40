"""A minimal pipelining Redis client for the hot read path: one connection per worker, many requests in flight.

Why: redis-py's asyncio pool costs each pipeline a pool lock, a liveness poll of the socket (an extra event-loop turn
under load) and a timeout context per reply; a request's ~60 HMGETs then cost more than the model. Redis answers
in order on one connection, so futures are resolved FIFO from a hiredis parser. Only reads use this; writes and
admin go through redis-py. Timeouts are the caller's (GuardedStore); a lost connection fails what is in flight and
the next call reconnects.
"""

from __future__ import annotations

import asyncio
from collections import deque
from urllib.parse import urlparse

import hiredis


def pack(args: tuple[bytes, ...]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class _Protocol(asyncio.Protocol):
    def __init__(self, client: RespClient):
        self.client = client
        self.reader = hiredis.Reader()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        pending = self.client._pending
        while True:
            reply = self.reader.gets()
            if reply is False:
                return
            if not pending:
                continue  # nothing waits for it (cannot happen unless the server misbehaves)
            fut = pending.popleft()
            if fut.done():
                continue  # its caller timed out; the reply is simply dropped
            if isinstance(reply, hiredis.ReplyError):
                fut.set_exception(reply)
            else:
                fut.set_result(reply)

    def connection_lost(self, exc) -> None:
        self.client._lost(exc)


class RespClient:
    def __init__(self, url: str, connect_timeout_s: float):
        u = urlparse(url)
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or 6379
        self.db = int((u.path or "/0").lstrip("/") or 0)
        self.password = u.password
        self.username = u.username
        self.connect_timeout_s = connect_timeout_s
        self._protocol: _Protocol | None = None
        self._pending: deque[asyncio.Future] = deque()
        self._connecting: asyncio.Lock | None = None

    def _lost(self, exc) -> None:
        self._protocol = None
        pending, self._pending = self._pending, deque()
        for fut in pending:
            if not fut.done():
                fut.set_exception(ConnectionError(f"redis connection lost: {exc}"))

    async def _connect(self) -> _Protocol:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._protocol is not None:
                return self._protocol
            loop = asyncio.get_running_loop()
            _, protocol = await asyncio.wait_for(
                loop.create_connection(lambda: _Protocol(self), self.host, self.port), self.connect_timeout_s
            )
            self._protocol = protocol
            setup: list[tuple[bytes, ...]] = []
            if self.password:
                setup.append((b"AUTH", *([self.username.encode()] if self.username else []), self.password.encode()))
            if self.db:
                setup.append((b"SELECT", str(self.db).encode()))
            if setup:
                await self._send(protocol, setup)
            return protocol

    async def _send(self, protocol: _Protocol, commands: list[tuple[bytes, ...]]) -> list:
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in commands]
        self._pending.extend(futures)
        protocol.transport.write(b"".join(pack(c) for c in commands))
        return list(await asyncio.gather(*futures))

    async def execute(self, commands: list[tuple[bytes, ...]]) -> list:
        protocol = self._protocol or await self._connect()
        return await self._send(protocol, commands)

    def close(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
