"""The dataflow on a real Redis Cluster (three embedded redis-server nodes in cluster mode): the sink's HSETs go to
the node of each key's slot, a replay there gives exactly the features a replay into one Redis gives, and so does a
live flow over stream partitions spread across the nodes."""

from __future__ import annotations

import random
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from load_tests.bench.sustained_mix import uniform_event as _event
from pantry import events
from pantry.featurestore import repo
from pantry.featurestore.pipeline import command_key
from pantry.featurestore.resp import RowEncoder
from pantry.health import live_flow
from pantry.keys import EVENT_FIELD
from pantry.partitions import events_stream, events_streams, partition_of
from pantry.redis_server import EmbeddedCluster, sync_client
from pantry.settings import Settings, from_env
from streaming import runner
from tests.streaming.test_live import LiveFlow, wait_for
from tests.streaming.test_recovery import feature_hashes, isolated, quiet_replay

BASE = datetime(2017, 6, 1, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedCluster]:
    nodes = EmbeddedCluster(tmp_path_factory.mktemp("stream-cluster")).start()
    yield nodes
    nodes.stop()


def test_command_key_is_the_encoders_key(feast_applied: Settings) -> None:
    encoder = RowEncoder(repo.layout(feast_applied))
    for view, join_values in (("customer_activity", (1,)), ("customer_session", (13 * 10**9 + 10,)),
                              ("store_product", (367, 9_999_999)), ("store_traffic", (0,))):
        command = encoder.hset_command(view, join_values, {}, 1_500_000_000.25)
        assert command_key(command) == encoder.key(view, join_values)


def test_replay_on_a_cluster_equals_one_redis(feast_applied: Settings, cluster: EmbeddedCluster,
                                              tmp_path: Path) -> None:
    single = isolated(feast_applied, tmp_path / "single", 6)
    quiet_replay(single)
    data = tmp_path / "cluster"
    data.mkdir()
    (data / "data").symlink_to(feast_applied.dataset_dir)
    shutil.copy(feast_applied.registry_path, data / "registry.db")
    on_cluster = from_env({"PANTRY_DATA_DIR": str(data), "REDIS_URL": cluster.url, "PANTRY_REDIS_CLUSTER": "1"})
    quiet_replay(on_cluster)
    per_node = [redis.Redis(host="127.0.0.1", port=node.port).dbsize() for node in cluster.nodes]
    assert all(n > 100 for n in per_node), f"rows should spread over every node: {per_node}"
    expected, got = feature_hashes(single), feature_hashes(on_cluster)
    assert len(got) == len(expected) > 1000
    assert got == expected


def test_a_live_flow_over_stream_partitions_on_a_cluster_equals_one_stream_on_one_redis(
        feast_applied: Settings, cluster: EmbeddedCluster, tmp_path: Path) -> None:
    """Three stream partitions on the cluster: their streams in the slots of different nodes, each read by its own
    source partition and gate, every event processed once, and the rows of one stream on one Redis."""
    for node in cluster.nodes:  # the replay test's rows out
        redis.Redis(host="127.0.0.1", port=node.port).flushall()
    rng, heavy = random.Random(11), [0]
    evs = [_event(rng, i, BASE + timedelta(milliseconds=20 * i), heavy) for i in range(3_000)]

    single = isolated(feast_applied, tmp_path / "single", 6)
    one = sync_client(single)
    for e in evs:
        one.xadd(events_stream(0), {EVENT_FIELD: events.encode_msgpack(e)})
    with LiveFlow(single):
        assert wait_for(lambda: runner.read_counters(one).get("processed", 0) >= len(evs), 90, 0.1)
    expected = feature_hashes(single)

    data = tmp_path / "cluster"
    data.mkdir()
    (data / "data").symlink_to(feast_applied.dataset_dir)
    shutil.copy(feast_applied.registry_path, data / "registry.db")
    on_cluster = from_env({"PANTRY_DATA_DIR": str(data), "REDIS_URL": cluster.url, "PANTRY_REDIS_CLUSTER": "1",
                           "PANTRY_STREAM_PARTITIONS": "3"})
    client = sync_client(on_cluster)
    nodes = {client.get_node_from_key(stream).port for stream in events_streams(3)}
    assert len(nodes) >= 2, f"the partitions' streams should spread over the nodes: {nodes}"
    for e in evs:
        client.xadd(events_stream(partition_of(e.customer_id, None, 3)), {EVENT_FIELD: events.encode_msgpack(e)})
    try:
        with LiveFlow(on_cluster):
            assert wait_for(lambda: runner.read_counters(client, 3).get("processed", 0) >= len(evs), 90, 0.1), \
                runner.read_counters(client, 3)
            assert wait_for(lambda: live_flow(client, 10.0, partitions=3).ok, 10, 0.1), \
                live_flow(client, 10.0, partitions=3)
        counters = runner.read_counters(client, 3)
        assert counters["processed"] == len(evs) and counters.get("duplicate", 0) == 0, counters
        assert all(client.xlen(stream) > 500 for stream in events_streams(3))
        got = feature_hashes(on_cluster)
        assert len(got) == len(expected) > 1000
        assert got == expected
    finally:
        for node in cluster.nodes:
            redis.Redis(host="127.0.0.1", port=node.port).flushall()
