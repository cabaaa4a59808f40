"""The online sink's writer on a Redis Cluster: the sink's pre-encoded HSETs grouped by the node that serves each
key's slot, each group sent on that node's own `PipelineWriter` connection.

The slot map is redis-py's (`RedisCluster`'s NodesManager). HSETs of absolute values are idempotent, so when a
resharding answers MOVED/ASK the map is refreshed and the whole batch is sent again.
"""

from __future__ import annotations

from collections.abc import Iterable

import redis
from redis.crc import key_slot

from streaming.sinks import PIPELINE_CHUNK, PipelineWriter


def command_key(command: bytes) -> bytes:
    """The key (first argument) of a RESP-encoded command: `*N`, `$len` and the name, then `$n` and n bytes (an
    entity key is binary, so it is cut by its length, never searched for)."""
    i = command.index(b"\r\n") + 2  # past *N
    i = command.index(b"\r\n", i) + 2  # past $len of the command name
    i = command.index(b"\r\n", i) + 2  # past the name
    j = command.index(b"\r\n", i)  # $n of the key
    n = int(command[i + 1 : j])
    return command[j + 2 : j + 2 + n]


class ClusterPipelineWriter:
    """`PipelineWriter`'s interface (send, send_chunks, close) over every primary of a Redis Cluster."""

    def __init__(self, client: redis.RedisCluster) -> None:
        self.client = client
        self.writers: dict[str, PipelineWriter] = {}

    def _writer(self, node) -> PipelineWriter:
        writer = self.writers.get(node.name)
        if writer is None:
            writer = self.writers[node.name] = PipelineWriter(self.client.get_redis_connection(node))
        return writer

    def send(self, commands: list[bytes]) -> None:
        self.send_chunks([commands])

    def send_chunks(self, chunks: Iterable[list[bytes]]) -> None:
        commands = [command for chunk in chunks for command in chunk]
        for attempt in range(2):
            manager = self.client.nodes_manager
            groups: dict[str, tuple[PipelineWriter, list[bytes]]] = {}
            for command in commands:
                node = manager.get_node_from_slot(key_slot(command_key(command)))
                if node.name not in groups:
                    groups[node.name] = (self._writer(node), [])
                groups[node.name][1].append(command)
            try:
                for writer, group in groups.values():
                    writer.send_chunks(group[i : i + PIPELINE_CHUNK] for i in range(0, len(group), PIPELINE_CHUNK))
                return
            except redis.ResponseError as exc:
                if attempt or not str(exc).startswith(("MOVED", "ASK")):
                    raise
                manager.initialize()  # a slot moved: learn the new map and send everything again

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()


def pipeline_writer(client) -> PipelineWriter | ClusterPipelineWriter:
    """The sink's writer for this client: one connection, or one per cluster node."""
    return ClusterPipelineWriter(client) if isinstance(client, redis.RedisCluster) else PipelineWriter(client)
