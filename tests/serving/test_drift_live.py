"""Drift end to end: answers feed the counters, /admin/drift returns PSI per feature, a shift raises it, the gauge
shows it. Real trained models (trained_models), a Redis of the test's own, real HTTP (Litestar's test client)."""

from __future__ import annotations

import asyncio
import base64
import re
import subprocess
import sys
import time
from datetime import UTC, datetime

import msgspec
import numpy as np
import pytest
from litestar.testing import AsyncTestClient

from pantry import drift
from pantry.featurestore import repo
from pantry.featurestore.pipeline import write_rows
from pantry.models import registry
from pantry.redis_server import sync_client
from pantry.settings import subprocess_env
from serving.app import create_app
from training import drift_reference
from training.data import load_purchases

VIEWS = ("customer_session", "customer_activity", "customer_repertoire", "customer_embedding")


@pytest.fixture()
def drift_settings(own_settings, trained_models):
    return msgspec.structs.replace(own_settings, drift_flush_s=0.2, drift_min_count=20,
                                   access_log="off")


def _visits(settings):
    version = registry.active_version(settings.models_dir, "recommender")
    directory = settings.models_dir / "recommender" / version
    until = datetime.fromisoformat(registry.read_manifest(directory).trained_until)
    purchases = load_purchases(settings, until)
    visits = drift_reference.sample_visits(purchases, until, settings.drift_reference_sample)
    dim = int(np.load(directory / "user_factors.npy", mmap_mode="r").shape[1])
    known = np.load(directory / "customers.npy")
    return version, visits, drift_reference.customer_views(purchases, visits, dim, known)


def _write(client, layout, customer_id: int, rows: dict, t: float) -> None:
    """The customer's rows as the stream would have written them (stamped with their newest event)."""
    for view in VIEWS:
        values = rows[view]
        if values is None:
            continue
        newest = values.get("last_order_at") or values.get("session_started_at") or t - 60.0
        write_rows(client, layout, view, [((customer_id,), values, datetime.fromtimestamp(newest, UTC))])


def _features(report: dict, model: str, version: str) -> tuple[dict, dict]:
    entry = next(m for m in report["models"] if m["model"] == model and m["version"] == version)
    return entry, {f["feature"]: f for f in entry["features"]}


async def test_answers_feed_drift_and_a_shift_raises_psi(drift_settings, api_keys, tmp_path) -> None:
    version, visits, views = _visits(drift_settings)
    assert len(visits) >= 40
    client = sync_client(drift_settings)
    for view in VIEWS:  # the customers' rows of the shared session are not ours to overwrite: own Redis, empty
        assert not client.keys(f"*{view}*")
    layout = repo.layout(drift_settings)
    ml = api_keys.headers("ml_engineer")
    async with AsyncTestClient(app=create_app(drift_settings), timeout=30) as http:
        http.headers.update(api_keys.headers("client"))
        # 1. the training visits again, live: the same customers, rows and instants -> the reference distribution
        for visit, rows in zip(visits.itertuples(index=False), views, strict=True):
            t = float(visit.t) - 1.0
            _write(client, layout, int(visit.customer_id), rows, t)
            body = {"customer_id": int(visit.customer_id), "k": 10, "surface": "for_you",
                    "as_of": datetime.fromtimestamp(t, UTC).isoformat()}
            if visit.store_id >= 0:
                body["store_id"] = int(visit.store_id)
            response = await http.post("/v1/recommendations", json=body)
            assert response.status_code == 201 or response.status_code == 200, response.text
            assert response.json()["model_version"] == version
        report = (await http.get("/admin/drift", headers=ml)).json()
        entry, same = _features(report, "recommender", version)
        assert entry["status"] == "ok" and entry["active"] and entry["live_count"] == len(visits)
        assert {f: round(v["psi"], 4) for f, v in same.items() if v["psi"] > 0.01} == {}
        assert all(v["status"] == "stable" for v in same.values())

        # 2. a shift: as many answers for customers the model never saw and with no online rows (cold starts)
        cold = [90_000_000 + i for i in range(3 * len(visits))]
        t = float(visits["t"].max())
        for customer_id in cold:
            response = await http.post("/v1/recommendations", json={
                "customer_id": customer_id, "k": 10, "as_of": datetime.fromtimestamp(t, UTC).isoformat()})
            assert response.json()["fallback"] == "cold_start"
        report = (await http.get("/admin/drift", headers=ml)).json()
        entry, moved = _features(report, "recommender", version)
        assert entry["live_count"] == 4 * len(visits)
        for feature in ("customer_activity.orders_28d", "customer_repertoire.repertoire_product_ids",
                        "customer_embedding.embedding"):
            assert moved[feature]["psi"] > 0.25 and moved[feature]["status"] == "significant", moved[feature]
            assert moved[feature]["live_fractions"][-1] >= 0.74  # the missing bin: 3 cold starts in 4
        assert entry["worst"] == "significant"
        assert report["thresholds"] == {"moderate": 0.1, "significant": 0.25, "min_count": 20}

        # 3. the gauge, computed at the scrape from the counts the drift task flushed
        deadline = time.monotonic() + 5
        line = ""
        while time.monotonic() < deadline and not line:
            await asyncio.sleep(0.3)
            text = (await http.get("/metrics", headers=api_keys.headers("metrics"))).text
            line = next((x for x in text.splitlines() if x.startswith("pantry_drift_psi{")
                         and 'feature="customer_activity.orders_28d"' in x and f'version="{version}"' in x), "")
        assert line and float(line.rsplit(" ", 1)[1]) > 0.25, line

        # counts are in Redis, one hash per model, version and day, with a TTL (bounded)
        day_keys = client.keys(f"pantry:drift:recommender:{version}:*")
        assert len(day_keys) == 1 and 0 < client.ttl(day_keys[0]) <= (drift_settings.drift_window_days + 1) * 86400
        assert (await http.get("/admin/drift", headers=api_keys.headers("client"))).status_code == 403

    # 4. `pantry drift report`: an HTML page with one embedded PNG per feature and the summary table
    out = tmp_path / "drift.html"
    result = subprocess.run([sys.executable, "-m", "pantry.cli", "drift", "report", "--out", str(out)],
                            env=subprocess_env(drift_settings), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    page = out.read_text()
    images = dict(re.findall(r"<img alt='recommender ([^']+)' src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page))
    assert set(images) == set(moved)
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images.values())
    assert "<h2>Summary</h2>" in page and f"recommender {version} (active)" in page and "significant" in page
    (tmp_path / "recommender-orders_28d.png").write_bytes(base64.b64decode(images["customer_activity.orders_28d"]))


def test_a_version_without_reference_says_so(drift_settings, tmp_path) -> None:
    from pantry import drift_report

    settings = msgspec.structs.replace(drift_settings, artifacts_dir=tmp_path)
    staging = registry.staging_dir(settings.models_dir, "substitutions", "v-old")
    (staging / "model.onnx").write_bytes(b"x")
    registry.publish(staging, registry.Manifest(name="substitutions", version="v-old", trained_until="t",
                                                data_digest="d", feature_service="substitutions_v1",
                                                created_at="c", files={}))
    registry.activate(settings.models_dir, "substitutions", "v-old")
    planned = drift_report.plan(settings)
    report = drift_report.assemble(settings, planned, [[{}] * len(p[3]) for p in planned])
    assert [(m.model, m.version, m.status, m.features) for m in report.models] == [
        ("substitutions", "v-old", "no reference", [])]


def test_recording_a_decision_costs_microseconds(drift_settings) -> None:
    """The request-path cost of DriftSampler.record with a real reference (the figure in docs/OPERATIONS.md)."""
    from serving.drift import DriftSampler, _Compiled

    version, visits, views = _visits(drift_settings)
    reference = drift.decode_reference(
        (drift_settings.models_dir / "recommender" / version / drift.REFERENCE_FILE).read_bytes())
    sampler = DriftSampler(drift_settings, None)
    sampler.compiled[("recommender", version)] = _Compiled(reference)
    from pantry.scoring import Scored

    items = [Scored(i, 1.0 / (i + 1), "r") for i in range(10)]
    now = datetime.fromtimestamp(float(visits["t"].max()), UTC)
    rounds = []
    for _ in range(5):  # the best of 5 rounds: other jobs on the shared 2-core machine inflate a round's tail
        timings = []
        for _ in range(4):
            for rows in views:
                start = time.perf_counter()
                sampler.record("recommender", version, rows, now, items)
                timings.append(time.perf_counter() - start)
        rounds.append(np.percentile(np.asarray(timings) * 1e6, [50, 99]))
    us = min(rounds, key=lambda r: r[1])
    print(f"drift record: p50 {us[0]:.1f} us, p99 {us[1]:.1f} us (best of 5 rounds of {len(timings)} decisions; "
          f"worst round p99 {max(r[1] for r in rounds):.1f} us)")
    assert sum(sampler.pending[("recommender", version)]) == 5 * len(timings) * len(reference.features)
    assert us[1] < 50.0


def test_two_worker_processes_add_up(drift_settings, api_keys, tmp_path) -> None:
    """`pantry serve` with 2 worker processes: every answer counted once in the shared hashes, whichever worker
    answered it and whichever answers /admin/drift; the gauge is exported by the real server."""
    from tests.serving.conftest import keyed_client, start_server

    version = registry.active_version(drift_settings.models_dir, "recommender")
    server = start_server(drift_settings, tmp_path, workers=2,
                          extra_env={"PANTRY_DRIFT_FLUSH_S": "0.2",
                                     "PANTRY_DRIFT_MIN_COUNT": "20", "PANTRY_ACCESS_LOG": "off"},
                          timeout_s=180)  # two workers importing Feast on a busy 2-core machine take a while
    try:
        with keyed_client(server.url, api_keys) as http:
            n = 200
            for i in range(n):
                response = http.post("/v1/recommendations", json={"customer_id": 80_000_000 + i, "k": 5})
                assert response.status_code in (200, 201), response.text
            time.sleep(1.0)  # both workers' flushes (0.2 s)
            report = http.get("/admin/drift", headers=api_keys.headers("ml_engineer")).json()
            entry, features = _features(report, "recommender", version)
            assert entry["live_count"] == n
            assert features["customer_activity.orders_7d"]["live_fractions"][-1] == 1.0  # all cold starts
            deadline = time.monotonic() + 10
            found = False
            while time.monotonic() < deadline and not found:
                text = http.get("/metrics").text
                found = any(x.startswith("pantry_drift_psi{") and f'version="{version}"' in x
                            for x in text.splitlines())
                time.sleep(0.3)
            assert found, "pantry_drift_psi not exported"
    finally:
        server.stop()


def test_a_row_of_an_unexpected_shape_is_not_counted_and_does_not_raise() -> None:
    from pantry.settings import from_env
    from serving.drift import DriftSampler, _Compiled

    names = drift.feature_names("next_best_action")
    reference = drift.build_reference("next_best_action", "v", "t", [[1.0] * len(names), [2.0] * len(names)])
    sampler = DriftSampler(from_env({}), None)
    sampler.compiled[("next_best_action", "v")] = _Compiled(reference)
    now = datetime(2017, 11, 1, tzinfo=UTC)
    sampler.record("next_best_action", "v", {"customer_activity": {"orders_7d": "many"}}, now, [])
    assert sampler.errors == 1 and not sampler.pending
    sampler.record("next_best_action", "v", {"customer_activity": {"orders_7d": 3}}, now, [])
    assert sum(sampler.pending[("next_best_action", "v")]) == len(names)
    sampler.record("next_best_action", "v-unknown", {}, now, [])  # not loaded yet: asked for, not counted
    assert ("next_best_action", "v-unknown") in sampler.wanted


def test_the_drift_gauge_is_left_out_of_a_scrape_when_redis_does_not_answer(drift_settings, tmp_path):
    """Computed at the scrape: a Redis that is gone gives a scrape without the drift family, never a failed one."""
    import redis.asyncio as aioredis

    from pantry.redis_server import EmbeddedRedis, free_port
    from serving.drift import DriftSampler

    server = EmbeddedRedis(free_port(), tmp_path / "redis").start(daemonize=False)
    port = server.port
    server.stop()  # nothing listens on the port now
    version = registry.active_version(drift_settings.models_dir, "recommender")

    async def main():
        client = aioredis.Redis(port=port, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            return await DriftSampler(drift_settings, client).scrape_families({"recommender": version})
        finally:
            await client.aclose()

    assert asyncio.run(main()) == []
