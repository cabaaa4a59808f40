"""Writing pre-encoded RESP commands to Redis in pipelined chunks: one connection, or one per Redis Cluster node.

Used by the stream's online sink (every flush) and by batch writes (catalogue, coupons, embeddings). The replies
of `HSET` are one line each (`:n`, or `-error`), so they are counted, not parsed (docs/DECISIONS.md, "A
hand-written Feast codec").
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

import redis
from redis.crc import key_slot

from pantry.featurestore.layout import OnlineLayout
from pantry.featurestore.resp import RowEncoder

CHUNK = 2000  # commands per write: big enough to amortise the round trip, small enough to overlap encoding


class PipelineWriter:
    """Sends pre-encoded RESP commands whose replies are one line each on one dedicated redis-py connection (its
    AUTH/SELECT handshake), and reads the replies as raw bytes."""

    def __init__(self, client: redis.Redis) -> None:
        self.conn = client.connection_pool.make_connection()

    def send(self, commands: list[bytes]) -> None:
        """Send the commands and wait for every reply (an error reply raises)."""
        self.send_chunks([commands])

    def send_chunks(self, chunks: Iterable[list[bytes]]) -> None:
        """Send chunks of commands (an iterable: a generator encodes the next chunk while Redis answers the last
        one) and return once every command is answered; an error reply raises after all replies are read, so the
        connection stays usable. Only the replies of earlier chunks are waited for before a chunk is built:
        Redis's work on one chunk overlaps the encoding of the next, on the other core."""
        conn = self.conn
        if conn._sock is None:
            conn.connect()
        sock = conn._sock
        sent = answered = 0
        error: bytes | None = None
        try:
            for chunk in chunks:
                if not chunk:
                    continue
                previous = sent
                sock.sendall(b"".join(chunk))
                sent += len(chunk)
                answered, error = self._read(sock, previous, answered, error)
            answered, error = self._read(sock, sent, answered, error)
        except BaseException:
            conn.disconnect()  # replies may be left unread: reconnect next time
            raise
        if error is not None:
            message = error.split(b"\r\n", 1)[0].decode(errors="replace")
            if message.startswith("LOADING"):  # a restarted Redis reading its AOF: unavailable, not a bug
                raise redis.BusyLoadingError(message)  # a ConnectionError, as redis-py raises it
            raise redis.ResponseError(message)

    @staticmethod
    def _read(sock, want: int, answered: int, error: bytes | None) -> tuple[int, bytes | None]:
        """Read replies until `want` are in. Each reply is one line: counting newlines per received block is exact
        however the blocks split the lines; HSET's integers are >= 0, so a minus sign can only start an error."""
        while answered < want:
            block = sock.recv(65536)
            if not block:
                raise redis.ConnectionError("Redis closed the connection while replies were pending")
            answered += block.count(b"\n")
            if error is None and b"-" in block:
                error = block[block.index(b"-") + 1:]
            elif error is not None and b"\r\n" not in error:
                error += block
        return answered, error

    def close(self) -> None:
        self.conn.disconnect()


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
    """`PipelineWriter`'s interface over every primary of a Redis Cluster: the commands grouped by the node that
    serves each key's slot (redis-py's slot map), each group on that node's own connection. HSETs of absolute values
    are idempotent, so when a resharding answers MOVED/ASK the map is refreshed and the whole batch sent again."""

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
                    writer.send_chunks(chunked(group))
                return
            except redis.ResponseError as exc:
                if attempt or not str(exc).startswith(("MOVED", "ASK")):
                    raise
                manager.initialize()  # a slot moved: learn the new map and send everything again

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()


def pipeline_writer(client: redis.Redis | redis.RedisCluster) -> PipelineWriter | ClusterPipelineWriter:
    """The writer for this client: one connection, or one per cluster node."""
    return ClusterPipelineWriter(client) if isinstance(client, redis.RedisCluster) else PipelineWriter(client)


def chunked(items: Sequence, size: int = CHUNK) -> Iterator[Sequence]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def write_rows(client, layout: OnlineLayout, view: str, rows: Iterable[tuple[Sequence[int], dict[str, Any],
               datetime | float]]) -> int:
    """HSET rows of one view ((join values, {feature: value}, event time: epoch seconds or a datetime)),
    pipelined. Returns the count."""
    encoder = RowEncoder(layout)
    writer = pipeline_writer(client)
    n = 0

    def commands() -> Iterator[list[bytes]]:
        nonlocal n
        chunk: list[bytes] = []
        for join_values, values, ts in rows:
            chunk.append(encoder.hset_command(view, join_values, values, ts))
            if len(chunk) == CHUNK:
                n += len(chunk)
                yield chunk
                chunk = []
        n += len(chunk)
        yield chunk

    try:
        writer.send_chunks(commands())
    finally:
        writer.close()
    return n

