"""pantry on a real Redis Cluster: three embedded redis-server processes in cluster mode (slots split evenly).

Feast's own cluster client writes, serving's per-node round trips read the same rows, the service answers from the
cluster (features, a recommendation with its decision logged, events), and a slot that moves to another node
(MOVED) is followed without a failed request.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import redis

from pantry.featurestore import repo
from pantry.featurestore.batch_views import write_batch_views
from pantry.featurestore.roundtrip import ClusterRawPipeline
from pantry.keys import DECISIONS_STREAM
from pantry.partitions import events_streams, partition_of
from pantry.redis_server import EmbeddedCluster, sync_client
from pantry.settings import Settings, from_env
from tests.serving.conftest import Server, keyed_client, start_server


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedCluster]:
    nodes = EmbeddedCluster(tmp_path_factory.mktemp("redis-cluster")).start()
    yield nodes
    nodes.stop()


@pytest.fixture(scope="module")
def on_cluster(cluster: EmbeddedCluster, feast_applied: Settings, trained_models,
               tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The session's dataset and models, with a registry and online store of their own on the cluster."""
    data_dir = tmp_path_factory.mktemp("cluster-data")
    os.symlink(feast_applied.dataset_dir, data_dir / "data")
    settings = from_env({"PANTRY_DATA_DIR": str(data_dir), "PANTRY_ARTIFACTS_DIR": str(feast_applied.artifacts_dir),
                         "REDIS_URL": cluster.url, "PANTRY_REDIS_CLUSTER": "1", "PANTRY_CLOCK": "wall",
                         "PANTRY_API_KEYS": ",".join(feast_applied.api_keys),
                         "PANTRY_STREAM_PARTITIONS": "3"})  # the event write over slots of several nodes
    repo.apply(settings)
    write_batch_views(settings, progress=False)
    return settings


@pytest.fixture(scope="module")
def cluster_api(on_cluster: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(on_cluster, tmp_path_factory.mktemp("cluster-serving-logs"))
    yield server
    server.stop()


def _customers(settings: Settings, n: int) -> list[int]:
    from pantry.models import load_version, registry

    model = load_version(settings.models_dir, "recommender", registry.active_version(settings.models_dir,
                                                                                        "recommender"))
    return [int(c) for c in model.customers[:n]]


def test_feast_writes_and_pantry_reads_the_same_rows_on_every_node(on_cluster: Settings, cluster: EmbeddedCluster,
                                                                  cluster_api: Server, api_keys) -> None:
    import pandas as pd

    store = repo.store(on_cluster)
    customers = _customers(on_cluster, 30)
    now = datetime.now(UTC).replace(microsecond=0)
    n = len(customers)
    rows = pd.DataFrame({"customer_id": customers, "event_timestamp": [now] * n,
                         "orders_7d": [i % 5 for i in range(n)], "orders_28d": list(range(n)),
                         "spend_7d": [1.5 * i for i in range(n)], "spend_28d": [3.0 * i for i in range(n)],
                         "last_order_at": [now] * n, "preferred_store_id": [1] * n})
    store.write_to_online_store("customer_activity", rows)
    per_node = [redis.Redis(host="127.0.0.1", port=node.port).dbsize() for node in cluster.nodes]
    assert all(count > 0 for count in per_node), f"keys should spread over every node: {per_node}"

    client = sync_client(on_cluster)
    decisions_before = client.xlen(DECISIONS_STREAM)
    streams = events_streams(3)
    events_before = [client.xlen(stream) for stream in streams]
    with keyed_client(cluster_api.url, api_keys) as http:
        ready = http.get("/readyz")
        assert ready.status_code == 200, ready.text
        sdk = store.get_online_features(features=["customer_activity:orders_28d"],
                                        entity_rows=[{"customer_id": c} for c in customers]).to_dict()
        got = http.post("/v1/features", json={"features": ["customer_activity:orders_28d"],
                                              "entities": {"customer_id": customers}})
        assert got.status_code == 200, got.text
        assert got.json()["results"][1]["values"] == sdk["orders_28d"] == list(range(n))

        rec = http.post("/v1/recommendations", json={"customer_id": customers[0], "k": 5})
        assert rec.status_code == 200, rec.text
        assert rec.json()["fallback"] is None and len(rec.json()["items"]) == 5

        batch = [{"type": "add_to_cart", "event_id": f"cluster-{i}", "ts": now.isoformat(), "customer_id": c,
                  "store_id": 1, "product_id": 1000} for i, c in enumerate(customers[:12])]
        posted = http.post("/v1/events", json={"events": batch})
        assert posted.status_code == 202, posted.text
        again = http.post("/v1/events", json={"events": batch})  # each partition's marker is in its stream's slot
        assert again.status_code == 202 and again.json()["duplicate"] is True, again.text
    written = [client.xlen(stream) - before for stream, before in zip(streams, events_before, strict=True)]
    assert written == [sum(1 for c in customers[:12] if partition_of(c, None, 3) == p) for p in range(3)]
    assert len({client.get_node_from_key(stream).port for stream in streams}) >= 2  # a batch over several nodes
    deadline = time.monotonic() + 3
    while client.xlen(DECISIONS_STREAM) == decisions_before and time.monotonic() < deadline:
        time.sleep(0.05)  # the decision log is written by a background flusher
    assert client.xlen(DECISIONS_STREAM) > decisions_before


def test_a_moved_slot_is_followed(cluster: EmbeddedCluster) -> None:
    """Reassign a key's (empty) slot to another node behind the pipeline's back: the next call gets MOVED, learns
    the new map and answers; replies stay in command order across nodes."""
    client = redis.RedisCluster.from_url(cluster.url)
    keys = [f"pantry:test:moved:{i}".encode() for i in range(40)]
    for i, key in enumerate(keys):
        client.set(key, str(i))

    async def run() -> None:
        pipe = ClusterRawPipeline(cluster.url, read_timeout_s=2.0, connect_timeout_s=2.0)
        try:
            assert await pipe.run([(b"GET", k) for k in keys]) == [str(i).encode() for i in range(len(keys))]
            fresh = next(k for k in (f"pantry:test:moved:fresh:{i}".encode() for i in range(10_000))
                         if client.cluster_countkeysinslot(client.keyslot(k)) == 0)  # a slot may move only empty
            slot = client.keyslot(fresh)
            owner = client.get_node_from_key(fresh)
            target = next(n for n in client.get_primaries() if n.name != owner.name)
            target_id = client.cluster_myid(target)
            for node in client.get_primaries():
                client.execute_command("CLUSTER SETSLOT", slot, "NODE", target_id, target_nodes=node)
            assert await pipe.run([(b"GET", fresh), (b"GET", keys[0])]) == [None, b"0"]
            client.nodes_manager.initialize()
            client.set(fresh, "here")
            assert await pipe.run([(b"GET", fresh)]) == [b"here"]
        finally:
            await pipe.aclose()

    asyncio.run(run())


def test_a_node_down_degrades_answers_then_they_recover(api_keys, on_cluster: Settings, cluster: EmbeddedCluster,
                                                        cluster_api: Server) -> None:
    """One of three nodes stopped: requests whose rows live there get the fallback, never a 5xx; once the node is
    back (same port and node file) the answers are normal again. Runs last: it takes a node away."""
    customers = _customers(on_cluster, 30)
    node = cluster.nodes[1]
    node.stop()
    try:
        with keyed_client(cluster_api.url, api_keys) as http:
            answers = [http.post("/v1/recommendations", json={"customer_id": c, "k": 5}) for c in customers]
        assert [a.status_code for a in answers] == [200] * len(answers), [a.text for a in answers][:3]
        assert any(a.json()["fallback"] == "store_unavailable" for a in answers)
    finally:
        node.process = None
        node.start()
    deadline = time.monotonic() + 30
    with keyed_client(cluster_api.url, api_keys) as http:
        while True:
            body = http.post("/v1/recommendations", json={"customer_id": customers[0], "k": 5}).json()
            if body["fallback"] is None or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert body["fallback"] is None, body
