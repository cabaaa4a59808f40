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
