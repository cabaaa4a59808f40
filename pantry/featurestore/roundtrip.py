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
from redis._parsers.hiredis import NOT_ENOUGH_DATA

Command = tuple[bytes | str | int | float, ...]


class RawPipeline:
    def __init__(self, url: str, read_timeout_s: float, connect_timeout_s: float, max_connections: int = 512):
        # socket_timeout=None: the connection must not start its own timer per reply; `run` bounds the whole read.
        # The pool only builds connections (its settings: host, port, db, timeouts); `run` keeps its own idle
        # stack: a connection comes back only after every reply was read, so redis-py's per-checkout health poll
        # (a zero timeout and a socket read per request) has nothing to find.
        self.pool = redis.asyncio.ConnectionPool.from_url(
            url, socket_timeout=None, socket_connect_timeout=connect_timeout_s, max_connections=max_connections)
        self.read_timeout_s = read_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.max_connections = max_connections
        self._idle: list[redis.asyncio.Connection] = []
        self._open = 0  # connections made and not dropped (idle + in use)

    async def _connection(self) -> tuple[redis.asyncio.Connection, bool]:
        """A connection and whether it was idle before (an idle one may have been closed by the server since)."""
        while self._idle:
            conn = self._idle.pop()
            if conn.is_connected:
                return conn, True
            self._open -= 1
        if self._open >= self.max_connections:
            raise redis.ConnectionError("too many connections")
        conn = self.pool.make_connection()
        self._open += 1
        try:
            # the handshake after the TCP connect (HELLO, CLIENT SETINFO) would wait without limit: the connections
            # have no socket timeout of their own. A hung Redis still accepts TCP connections (the kernel does), so
            # this bound is what a request waits for a new connection to it: no more than for a reply
            async with asyncio.timeout(max(self.connect_timeout_s, self.read_timeout_s)):
                await conn.connect()
        except BaseException:
            self._open -= 1
            raise
        return conn, False

    async def run(self, commands: Sequence[Command], timeout_s: float | None = None) -> list[Any]:
        """The replies in command order. A reply error (WRONGTYPE, ...) raises redis ResponseError, a connection error
        or the read timeout (TimeoutError) raises as it comes; either way the connection is dropped, not reused.
        A reused connection that the server closed (a Redis restart) is retried once on a new one, as redis-py's
        health check at checkout would have done."""
        packed = b"".join([hiredis.pack_command(c) for c in commands])
        for attempt in (1, 2):
            conn, reused = await self._connection()
            try:
                await conn.send_packed_command(packed, check_health=False)
                replies: list[Any] = []
                try:
                    async with asyncio.timeout(timeout_s or self.read_timeout_s):
                        await _read_replies(conn, len(commands), replies)
                except TimeoutError:
                    # A loop that runs late fires its due timers before it polls the sockets: the replies may be
                    # in the socket already. One more turn of the loop reads them in; only what is still missing
                    # after that is a timeout.
                    await asyncio.sleep(0)
                    async with asyncio.timeout(0):
                        await _read_replies(conn, len(commands), replies)
            except TimeoutError:  # (an OSError too) Redis is slow, not gone: no retry here, GuardedStore decides
                await self._drop(conn)
                raise
            except (redis.ConnectionError, OSError):
                await self._drop(conn)
                if reused and attempt == 1:
                    await self._drop_idle()  # they date from the same server: likely closed too
                    continue
                raise
            except BaseException:
                await self._drop(conn)  # a half-read connection must never serve another request
                raise
            self._idle.append(conn)
            return replies
        raise AssertionError("unreachable")

    async def _drop(self, conn: redis.asyncio.Connection) -> None:
        self._open -= 1
        await conn.disconnect(nowait=True)

    async def _drop_idle(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await self._drop(conn)

    async def aclose(self) -> None:
        await self._drop_idle()
        await self.pool.aclose()


async def _read_replies(conn: redis.asyncio.Connection, n: int, replies: list[Any]) -> None:
    """Replies straight from the connection's hiredis reader, appended until there are n: one socket read feeds many
    replies, and there is no per-reply timeout context (redis-py's read_response costs one per reply; `run` bounds
    the whole batch)."""
    parser = conn._parser
    gets = parser._reader.gets
    while len(replies) < n:
        reply = gets()
        if reply is NOT_ENOUGH_DATA:
            await parser.read_from_socket()
            continue
        if isinstance(reply, Exception):  # hiredis hands a -ERR reply over as a ResponseError instance
            raise reply
        replies.append(reply)


def _key_bytes(key: bytes | str | int | float) -> bytes:
    return key if isinstance(key, bytes) else str(key).encode()


class ClusterRawPipeline:
    """RawPipeline over a Redis Cluster: each command goes to the node serving its key's slot (the key is the
    command's first argument for everything pantry sends), one packed write per node, all nodes concurrently, the
    replies back in command order. The slot map is redis-py's (`RedisCluster`'s NodesManager); a MOVED/ASK reply
    (a resharding) refreshes it and the call is retried once."""

    def __init__(self, url: str, read_timeout_s: float, connect_timeout_s: float, max_connections: int = 512):
        self.cluster = redis.asyncio.RedisCluster.from_url(
            url, socket_timeout=read_timeout_s, socket_connect_timeout=connect_timeout_s)
        self.read_timeout_s = read_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.max_connections = max_connections
        self.nodes: dict[str, RawPipeline] = {}  # "host:port" -> that node's pool
        self._initialized = False
        self._stale = False  # a node failed: learn the slot map again before the next call

    def _node(self, name: str, host: str, port: int) -> RawPipeline:
        pipe = self.nodes.get(name)
        if pipe is None:
            pipe = self.nodes[name] = RawPipeline(f"redis://{host}:{port}/0", self.read_timeout_s,
                                                  self.connect_timeout_s, self.max_connections)
        return pipe

    async def _run_once(self, commands: Sequence[Command], timeout_s: float | None) -> list[Any]:
        from redis.crc import key_slot

        if not self._initialized:
            await self.cluster.initialize()
            self._initialized = True
        elif self._stale:
            await self.cluster.nodes_manager.initialize()
        self._stale = False
        manager = self.cluster.nodes_manager
        groups: dict[str, tuple[RawPipeline, list[int]]] = {}
        for i, command in enumerate(commands):
            node = manager.get_node_from_slot(key_slot(_key_bytes(command[1])))
            if node.name not in groups:
                groups[node.name] = (self._node(node.name, node.host, node.port), [])
            groups[node.name][1].append(i)
        out: list[Any] = [None] * len(commands)

        async def on_node(pipe: RawPipeline, indices: list[int]) -> None:
            replies = await pipe.run([commands[i] for i in indices], timeout_s)
            for i, reply in zip(indices, replies, strict=True):
                out[i] = reply

        await asyncio.gather(*(on_node(pipe, indices) for pipe, indices in groups.values()))
        return out

    async def run(self, commands: Sequence[Command], timeout_s: float | None = None) -> list[Any]:
        from redis.exceptions import AskError, MovedError

        try:
            return await self._run_once(commands, timeout_s)
        except (MovedError, AskError):
            await self.cluster.nodes_manager.initialize()  # the slot map changed under us: learn it, try again
            return await self._run_once(commands, timeout_s)
        except (OSError, redis.ConnectionError, redis.TimeoutError, TimeoutError):
            self._stale = True  # a node went away (maybe a failover): ask for the slot map again next time
            raise

    async def aclose(self) -> None:
        for pipe in self.nodes.values():
            await pipe.aclose()
        await self.cluster.aclose()


RoundTrip = RawPipeline | ClusterRawPipeline  # what serving reads and writes through
