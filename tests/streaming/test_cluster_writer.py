"""The dataflow on a real Redis Cluster (three embedded redis-server nodes in cluster mode): the sink's HSETs go to
the node of each key's slot, and a replay there gives exactly the features a replay into one Redis gives."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from pantry.featurestore import repo
from pantry.featurestore.pipeline import command_key
from pantry.featurestore.resp import RowEncoder
from pantry.redis_server import EmbeddedCluster
from pantry.settings import Settings, from_env
from tests.streaming.test_recovery import feature_hashes, isolated, quiet_replay


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
