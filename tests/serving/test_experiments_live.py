"""The closed loop end to end: `pantry serve` with the live flow (outcome join, streaming/outcomes.py), an experiment
whose treatment is the `random` recommender baseline, outcomes posted as events, and the CTR guardrail stopping it.

The shoppers here click the first item of every control answer they see and nothing of the treatment's (random
items: what the drill stands for); every shown item gets an impression. The loop under test is the real one:
decisions -> decision log -> the flow's join -> KPI hashes -> the guardrail loop -> stop, audit, metric."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from live_service import serve_live

from pantry import experiments
from pantry.keys import EXPERIMENTS
from pantry.models.variants import ensure_baseline
from pantry.redis_server import sync_client
from pantry.settings import Settings, from_env


@pytest.fixture(scope="module")
def live(feast_applied: Settings, trained_models, api_keys, tmp_path_factory) -> Iterator[tuple[str, Settings]]:
    extra = {"PANTRY_STREAM_SNAPSHOT_S": "1", "PANTRY_KPI_FLUSH_S": "0.25"}
    with serve_live(feast_applied, tmp_path_factory.mktemp("experiments-live"), db=10, extra_env=extra) as (url, env):
        yield url, from_env(env)


def test_a_random_treatment_is_stopped_by_the_ctr_guardrail(live, api_keys, feast_applied):
    url, settings = live
    random_version = ensure_baseline(feast_applied.models_dir, "recommender", "random")
    ml, data = api_keys.headers("ml_engineer"), api_keys.headers("data")
    with httpx.Client(base_url=url, timeout=10) as http:
        created = http.post("/admin/experiments", headers=ml, json={
            "model": "recommender", "treatment": random_version, "share": 0.5,
            "guardrails": {"min_impressions": 100, "min_decisions": 50, "max_p_value": 0.001}})
        assert created.status_code == 201, created.text
        eid = created.json()["experiment_id"]
        exp = experiments.decode(sync_client(settings).hget(EXPERIMENTS, eid))
        started, served, n = time.monotonic(), {"control": 0, "treatment": 0}, 0
        stopped = None
        while time.monotonic() - started < 60 and stopped is None:
            events = []
            for _ in range(20):
                n += 1
                customer = 5_000_000 + n
                r = http.post("/v1/recommendations", headers=data, json={"customer_id": customer, "k": 5})
                assert r.status_code == 200, r.text
                answer = r.json()
                arm = experiments.arm_of(exp, customer)
                if answer["model_version"] == random_version or arm == "control":
                    served[arm] += 1
                ts = datetime.now(UTC).isoformat()
                for i, item in enumerate(answer["items"]):
                    common = {"ts": ts, "customer_id": customer, "decision_id": answer["decision_id"],
                              "product_id": item["product_id"]}
                    events.append({"type": "impression", "event_id": f"imp-{eid}-{n}-{i}", **common})
                    if arm == "control" and i == 0:
                        events.append({"type": "click", "event_id": f"clk-{eid}-{n}", **common})
            assert http.post("/v1/events", headers=data, json={"events": events}).status_code == 202
            got = http.get(f"/admin/experiments/{eid}", headers=ml).json()["experiment"]
            if got["status"] != "running":
                stopped = got
        took = time.monotonic() - started
        assert stopped is not None, http.get(f"/admin/experiments/{eid}", headers=ml).json()
        assert stopped["status"] == "stopped" and stopped["reason"].startswith("guardrail ctr_drop")
        print(f"random treatment stopped by the CTR guardrail after {served['treatment']} treatment decisions "
              f"({served['control']} control), {took:.1f} s after the experiment started: {stopped['reason']}")
        metrics = http.get("/metrics", headers=api_keys.headers("metrics")).text
        assert any(line.startswith("pantry_guardrail_breaches_total{") and 'guardrail="ctr_drop"' in line
                   for line in metrics.splitlines())


def test_an_impression_and_a_click_count_for_the_treatment_arm_within_a_second_once(live, api_keys, feast_applied):
    """The KPI row of an experiment's decision is keyed by the version that answered and its arm; a resent outcome
    (same event_id) and a second click on the same item count once."""
    url, _ = live
    popularity = ensure_baseline(feast_applied.models_dir, "recommender", "popularity")
    ml, data = api_keys.headers("ml_engineer"), api_keys.headers("data")
    with httpx.Client(base_url=url, timeout=10) as http:
        for running in http.get("/admin/experiments", headers=ml).json():
            if running["status"] == "running":
                http.post(f"/admin/experiments/{running['experiment_id']}/stop", headers=ml)
        created = http.post("/admin/experiments", headers=ml,
                            json={"model": "recommender", "treatment": popularity, "share": 1.0})
        assert created.status_code == 201, created.text
        eid = created.json()["experiment_id"]
        customer = 6_000_001
        deadline = time.monotonic() + 10  # every worker picks the experiment up within experiments_poll_s
        while (answer := http.post("/v1/recommendations", headers=data,
                                   json={"customer_id": customer, "k": 3}).json())["model_version"] != popularity:
            assert time.monotonic() < deadline, answer
            time.sleep(0.2)
        common = {"ts": datetime.now(UTC).isoformat(), "customer_id": customer,
                  "decision_id": answer["decision_id"], "product_id": answer["items"][0]["product_id"]}
        events = [{"type": "impression", "event_id": f"imp-{eid}", **common},
                  {"type": "click", "event_id": f"clk-{eid}", **common}]
        posted = time.monotonic()
        for batch in (events, events, [{**events[1], "event_id": f"clk2-{eid}"}]):  # resent, then a second click
            assert http.post("/v1/events", headers=data, json={"events": batch}).status_code == 202
        row, seen_after = None, None
        while time.monotonic() - posted < 1.0:
            rows = http.get("/admin/kpis", headers=ml, params={"experiment": eid, "by_day": "false"}).json()["rows"]
            row = next((r for r in rows if r["arm"] == "treatment"), None)
            if row and row["impressions"] >= 1 and row["clicks"] >= 1:
                seen_after = time.monotonic() - posted
                break
            time.sleep(0.05)
        assert seen_after is not None, row
        time.sleep(1.0)  # give duplicates the time to be (wrongly) counted
        rows = http.get("/admin/kpis", headers=ml, params={"experiment": eid, "by_day": "false"}).json()["rows"]
        assert [(r["version"], r["arm"], r["impressions"], r["clicks"]) for r in rows] == [
            (popularity, "treatment", 1, 1)], rows
        print(f"treatment-arm impression + click visible in /admin/kpis {seen_after * 1000:.0f} ms after the POST")
        assert http.post(f"/admin/experiments/{eid}/stop", headers=ml).status_code in (200, 201)
