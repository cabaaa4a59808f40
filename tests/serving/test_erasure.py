"""Forgetting a customer (pantry.erasure) over every store, through the real endpoint and the real CLI: online rows,
offline feature log, decision log, dead letters, event stream, data set, model artifacts; the audit entry; later
answers treat the customer as new; a running worker stops using their model rows; idempotent."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime

import httpx
import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pantry import audit, events
from pantry.erasure import _Matcher
from pantry.featurestore import repo
from pantry.featurestore.pipeline import write_rows
from pantry.keys import (
    DEAD_LETTER_STREAM,
    DECISIONS_STREAM,
    ERASED_CUSTOMERS,
    EVENT_FIELD,
    EVENTS_STREAM,
    decisions_of,
)
from pantry.models import registry
from pantry.redis_server import sync_client
from pantry.settings import from_env, subprocess_env
from streaming import runner
from tests.serving.conftest import start_server

REPLAY_UNTIL = datetime(2017, 6, 1, tzinfo=UTC)


def stream_mentions(client, stream: str, field: bytes, customer_id: int) -> int:
    match = _Matcher(customer_id)
    return sum(match(fields.get(field)) for _, fields in client.xrange(stream))


def parquet_rows(root, customer_id: int, pattern: str) -> int:
    n = 0
    for path in root.rglob(pattern):
        if path.name.startswith(".") or "customer_id" not in pq.read_schema(path).names:
            continue
        n += int(pc.sum(pc.equal(pq.read_table(path, columns=["customer_id"]).column(0), customer_id)).as_py() or 0)
    return n


@pytest.fixture(scope="module")
def world(feast_applied, trained_models, tmp_path_factory):
    """Own copies of the data set, registry and models, own Redis db; a replay to June 2017 (online rows, feature
    log); a server on them. Returns (settings, server, customer, other customer, product)."""
    base = feast_applied
    root = tmp_path_factory.mktemp("erasure")
    data = root / "data"
    data.mkdir()
    shutil.copytree(base.dataset_dir, data / "data")
    shutil.copy(base.registry_path, data / "registry.db")
    shutil.copytree(base.models_dir, root / "artifacts" / "models")
    env = {**os.environ, "PANTRY_DATA_DIR": str(data), "PANTRY_ARTIFACTS_DIR": str(root / "artifacts"),
           "REDIS_URL": f"redis://127.0.0.1:{base.embedded_redis_port}/14"}
    settings = from_env(env)
    client = sync_client(settings)
    client.flushdb()
    runner.replay(settings, REPLAY_UNTIL, None, 1, force=True, progress=False, echo=lambda _: None)
    rec = registry.active_version(settings.models_dir, "recommender")
    known = set(np.load(settings.models_dir / "recommender" / rec / "customers.npy").tolist())
    ev = pq.read_table(settings.dataset_dir / "events.parquet", columns=["customer_id", "product_id", "store_id"])
    counts = ev.group_by("customer_id").aggregate([("product_id", "count")])
    counts = counts.sort_by([("product_id_count", "descending")])
    ids = [c for c in counts.column("customer_id").to_pylist() if c in known]
    customer, other = ids[0], ids[1]
    row = ev.filter(pc.equal(ev.column("customer_id"), customer)).slice(0, 1).to_pylist()[0]
    server = start_server(settings, str(root))
    yield settings, server, customer, other, (row["product_id"], row["store_id"])
    server.stop()


def ask(http: httpx.Client, customer: int, product: tuple[int, int]) -> dict[str, str | None]:
    product_id, store_id = product
    answers = {
        "recommendations": http.post("/v1/recommendations", json={"customer_id": customer, "store_id": store_id}),
        "substitutions": http.post("/v1/substitutions", json={"customer_id": customer, "store_id": store_id,
                                                              "product_ids": [product_id]}),
        "next-best-action": http.post("/v1/next-best-action", json={"customer_id": customer}),
    }
    for name, r in answers.items():
        assert r.status_code == 200, (name, r.text)
    return {name: r.json()["fallback"] for name, r in answers.items()}


def test_forget_removes_the_customer_from_every_store(world, api_keys):
    settings, server, customer, other, product = world
    ADMIN, MERCH = api_keys.headers("admin"), api_keys.headers("merchandiser")
    client = sync_client(settings)
    layout = repo.layout(settings)
    key = layout.key("customer_activity", (customer,))
    # the customer's substitution feedback (the live flow writes it from feedback events; the replay had none)
    write_rows(client, layout, "customer_substitution_feedback", [((customer,), {
        "original_ids": [product[0]], "substitute_ids": [1], "accepted_counts": [0], "rejected_counts": [1],
        "last_accepted": [0]}, datetime(2017, 6, 2, tzinfo=UTC))])
    # the stores hold the customer (and the other customer) before
    assert client.exists(key) and client.exists(layout.key("customer_substitution_feedback", (customer,)))
    assert parquet_rows(settings.feature_log_dir, customer, "part-*.parquet") > 0
    assert parquet_rows(settings.dataset_dir, customer, "*.parquet") > 0
    ts = datetime(2017, 6, 2, tzinfo=UTC)
    for cid in (customer, other):
        e = events.ProductView(event_id=f"erase-{cid}", ts=ts, customer_id=cid, product_id=product[0])
        client.xadd(EVENTS_STREAM, {EVENT_FIELD: events.encode_msgpack(e)})
        client.xadd(DEAD_LETTER_STREAM, {b"reason": b"late: 2 h behind", b"e": events.encode_msgpack(e)})
    cut = b'{"type":"purchase","customer_id":%d,"ba' % customer  # a truncated raw payload
    client.xadd(DEAD_LETTER_STREAM, {b"reason": b"invalid: cut", b"e": cut})
    with httpx.Client(base_url=server.url, timeout=30.0, headers=api_keys.headers("data")) as http:
        before = ask(http, customer, product)
        ask(http, other, product)
        assert "cold_start" not in before.values(), before
        for cid in (customer, other):  # the decision log writes in the background: all six answers are in it
            assert wait_for(lambda cid=cid: stream_mentions(client, DECISIONS_STREAM, b"request", cid) >= 3, 5.0)
        assert client.llen(decisions_of(customer)) == 3  # the console's index of the customer's decisions
        others = {s: stream_mentions(client, s, f, other) for s, f in
                  ((DECISIONS_STREAM, b"request"), (DEAD_LETTER_STREAM, b"e"), (EVENTS_STREAM, EVENT_FIELD))}

        assert http.post(f"/admin/customers/{customer}/forget", headers={"X-API-Key": ""}).status_code == 401
        assert http.post(f"/admin/customers/{customer}/forget", headers=MERCH).status_code == 403
        assert http.post("/admin/customers/-3/forget", headers=ADMIN).status_code == 400
        r = http.post(f"/admin/customers/{customer}/forget", headers=ADMIN)
        assert r.status_code == 200, r.text
        removed = r.json()["removed"]
        assert all(removed[k] > 0 for k in ("online_rows", "decisions", "dead_letters", "events", "feature_log_rows",
                                           "dataset_rows", "model_versions")), removed
        assert removed["dead_letters"] == 2 and removed["events"] == 1

        # every store: nothing of the customer left, the other customer untouched
        views = [v for v, schema in layout.views.items() if schema.join_keys == ("customer_id",)]
        assert len(views) >= 4 and not any(client.exists(layout.key(v, (customer,))) for v in views)
        assert client.exists(layout.key("customer_activity", (other,)))
        assert parquet_rows(settings.feature_log_dir, customer, "part-*.parquet") == 0
        assert parquet_rows(settings.feature_log_dir, other, "part-*.parquet") > 0
        assert parquet_rows(settings.dataset_dir, customer, "*.parquet") == 0
        assert parquet_rows(settings.dataset_dir, other, "*.parquet") > 0
        for stream, field in ((DECISIONS_STREAM, b"request"), (DEAD_LETTER_STREAM, b"e"), (EVENTS_STREAM, EVENT_FIELD)):
            assert stream_mentions(client, stream, field, customer) == 0, stream
            assert stream_mentions(client, stream, field, other) == others[stream], stream
        assert client.sismember(ERASED_CUSTOMERS, customer)
        assert not client.exists(decisions_of(customer)) and client.llen(decisions_of(other)) == 3
        for model in ("recommender", "substitutions", "next_best_action"):
            for version in registry.versions(settings.models_dir, model):
                directory = settings.models_dir / model / version
                registry.verify(directory)  # the manifest matches every rewritten file
                ids = np.load(directory / "customers.npy")
                u = int(np.searchsorted(ids, customer))
                if u < len(ids) and ids[u] == customer and (directory / "user_factors.npy").exists():
                    assert not np.load(directory / "user_factors.npy")[u].any(), (model, version)
                for prefix in ("hist", "pair", "enr", "nudge"):
                    if (directory / f"{prefix}_indptr.npy").exists() and u < len(ids) and ids[u] == customer:
                        indptr = np.load(directory / f"{prefix}_indptr.npy")
                        assert indptr[u] == indptr[u + 1], (model, version, prefix)
        # the audit log says who, what, and how much, not the data
        entries = [e for _, e in audit.read_all(client) if e.action == "customer.forget"]
        assert entries[-1].target == f"customer:{customer}" and entries[-1].actor == "test-admin"
        assert entries[-1].after == removed

        # later answers: a new customer; the models still load (sha256 of every file verified)
        assert set(ask(http, customer, product).values()) == {"cold_start"}
        assert "cold_start" not in ask(http, other, product).values()

    # idempotent, from the command line: nothing of the erased customer left, recorded again
    result = subprocess.run([sys.executable, "-m", "pantry.cli", "customers", "forget", str(customer)],
                            env=subprocess_env(settings), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    entries = [e for _, e in audit.read_all(client) if e.action == "customer.forget"]
    assert entries[-1].actor.startswith("cli:")
    again = entries[-1].after
    # only the 3 answers given after the erasure (a new relationship) were there to remove
    assert again.pop("decisions") == 3 and again.pop("model_versions") >= 1
    assert set(again.values()) == {0}, again


def wait_for(predicate, timeout_s: float, every_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every_s)
    return predicate()


def test_an_erased_customer_is_new_to_every_loaded_model(feast_applied, trained_models):
    """A worker's already-loaded scorers stop using the customer's rows once the erased set says so: the answer is
    the one of a customer the version never saw."""
    from serving.models import ModelHolder
    from serving.redis_guard import GuardedStore
    from serving.services import serving_client

    settings = feast_applied
    version = registry.active_version(settings.models_dir, "recommender")
    customer = int(np.load(settings.models_dir / "recommender" / version / "customers.npy")[0])
    stranger = 2**40

    holder = ModelHolder(settings.models_dir, recommender_cache=100)
    holder.load_now()
    rec = holder.current.recommender
    kw = dict(k=10, surface="for_you", exclude=frozenset(), store_id=None)
    as_stranger = [s.product_id for s in rec.recommend({}, customer_id=stranger, **kw)]
    known = [s.product_id for s in rec.recommend({}, customer_id=customer, **kw)]
    assert known != as_stranger  # the version knows them (else the test proves nothing)

    async def watch() -> None:
        client = serving_client(settings)
        task = asyncio.create_task(holder.watch_erased(client, GuardedStore(slack_s=0.01), interval_s=0.1))
        sync_client(settings).sadd(ERASED_CUSTOMERS, customer)
        try:
            deadline = time.monotonic() + 1.0
            while customer not in rec.hidden and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        finally:
            task.cancel()
            sync_client(settings).srem(ERASED_CUSTOMERS, customer)
            await client.aclose()

    asyncio.run(watch())
    assert customer in rec.hidden and customer in holder.current.next_best_action.hidden
    assert [s.product_id for s in rec.recommend({}, customer_id=customer, **kw)] == as_stranger
    nba = holder.current.next_best_action
    now = datetime(2017, 9, 1, tzinfo=UTC)
    assert nba.actions({}, customer_id=customer, campaign_ids=frozenset(), k=3, channel="app", now=now) == \
        nba.actions({}, customer_id=stranger, campaign_ids=frozenset(), k=3, channel="app", now=now)
