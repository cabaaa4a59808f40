"""Experiments over real HTTP (the session server, one worker): baseline variants, create/list/report/promote/stop
with keys, 4xx cases, stable arms in answers and in the decision log, an unloadable treatment, and the guardrail loop
stopping a treatment from the KPI hashes (pantry/kpis.py contract)."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from pantry import experiments
from pantry.keys import DECISIONS_STREAM, EXPERIMENTS, EXPERIMENTS_RUNNING
from pantry.kpis import KPI_HASHES, Counts, KpiKey, encode_counts, latency_bucket
from pantry.models import load_version, registry
from pantry.models.variants import RandomRecommender, publish_baseline
from pantry.scoring import ModelError
from pantry.settings import Settings, subprocess_env


def _baseline(settings: Settings, name: str, variant: str) -> str:
    """`pantry models baseline NAME --variant V` (the command), or the version it made earlier this session."""
    active = registry.active_version(settings.models_dir, name)
    version = f"{active}-{variant}"
    if version in registry.versions(settings.models_dir, name):
        return version
    result = subprocess.run([sys.executable, "-m", "pantry.cli", "models", "baseline", name, "--variant", variant],
                            env=subprocess_env(settings), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == version
    return version


@pytest.fixture()
def baselines(trained_models, feast_applied, http, api_keys):
    """The recommender ACTIVE at the trained fixture's first version, and its popularity baseline."""
    active, _newer = trained_models
    ml = api_keys.headers("ml_engineer")
    assert http.post("/admin/models/recommender/activate", headers=ml, json={"version": active}).status_code == 200
    return active, _baseline(feast_applied, "recommender", "popularity")


@pytest.fixture()
def no_experiments(http, api_keys):
    """Stop whatever a test left running (the session server is shared)."""
    yield
    ml = api_keys.headers("ml_engineer")
    for e in http.get("/admin/experiments", headers=ml).json():
        if e["status"] == "running":
            http.post(f"/admin/experiments/{e['experiment_id']}/stop", headers=ml)


AS_OF = datetime(2017, 11, 1, 12, tzinfo=UTC)


def _recommend(http, customer_id: int, as_of: datetime | None = None) -> dict:
    body = {"customer_id": customer_id, "k": 5, **({"as_of": as_of.isoformat()} if as_of else {})}
    r = http.post("/v1/recommendations", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def _wait(predicate, timeout_s: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def test_variants_load_and_answer(trained_models, feast_applied):
    models_dir = feast_applied.models_dir
    active = registry.active_version(models_dir, "recommender")
    trained = load_version(models_dir, "recommender", active)
    popular = load_version(models_dir, "recommender", _baseline(feast_applied, "recommender", "popularity"))
    assert type(popular).__name__ == "PopularityRecommender"
    answer = popular.recommend({}, customer_id=1, k=5, surface="for_you", exclude=frozenset(), store_id=None)
    assert [s.product_id for s in answer] == [s.product_id for s in trained.popular(k=5, store_id=None,
                                                                                       exclude=frozenset())]
    first = answer[0].product_id
    excluded = popular.recommend({}, customer_id=1, k=5, surface="for_you", exclude=frozenset({first}), store_id=None)
    assert first not in {s.product_id for s in excluded} and len(excluded) == 5

    rnd = load_version(models_dir, "recommender", _baseline(feast_applied, "recommender", "random"))
    assert isinstance(rnd, RandomRecommender)
    draws = [tuple(s.product_id for s in rnd.recommend({}, customer_id=1, k=5, surface="for_you",
                                                       exclude=frozenset(), store_id=None)) for _ in range(5)]
    assert all(len(d) == 5 for d in draws) and len(set(draws)) > 1  # random, every time
    scorable = {int(rnd.products[i]) for i in rnd.scorable}
    assert all(p in scorable for d in draws for p in d)

    rule = load_version(models_dir, "next_best_action", _baseline(feast_applied, "next_best_action", "rule"))
    acts = rule.actions({}, customer_id=1, campaign_ids=frozenset(int(c) for c in rule.t.campaigns), k=3,
                        channel="app", now=datetime(2017, 10, 15, tzinfo=UTC))
    assert type(rule).__name__ == "RuleNextBestAction" and len(acts) <= 3
    assert all(a.score > 0 for a in acts)

    failing = load_version(models_dir, "recommender", _baseline(feast_applied, "recommender", "failing"))
    with pytest.raises(RuntimeError, match="guardrail drill"):
        failing.recommend({}, customer_id=1, k=5, surface="for_you", exclude=frozenset(), store_id=None)
    assert failing.popular(k=3, store_id=None, exclude=frozenset())  # what the model_error answer serves

    with pytest.raises(ModelError, match="no variant"):
        publish_baseline(models_dir, "substitutions", "popularity")
    with pytest.raises(ModelError, match="already exists"):
        publish_baseline(models_dir, "recommender", "popularity")


def test_create_list_report_stop_and_4xx(http, api_keys, baselines, no_experiments):
    active, popular = baselines
    ml = api_keys.headers("ml_engineer")
    body = {"model": "recommender", "treatment": popular, "share": 0.2}
    assert http.post("/admin/experiments", json=body).status_code == 403  # the data key has no ml_engineer scope
    assert http.post("/admin/experiments", json=body, headers={"X-API-Key": ""}).status_code == 401
    cases = [({**body, "model": "nope"}, 404, "no model"), ({**body, "treatment": "v-none"}, 404, "no version"),
             ({**body, "share": 0}, 400, "share"), ({**body, "share": 1.5}, 400, "share"),
             ({**body, "treatment": active}, 400, "ACTIVE"), ({**body, "share": None}, 400, "ramp"),
             ({**body, "share": None, "ramp": [0.5, 0.1]}, 400, "increase"),
             ({**body, "guardrails": {"max_p_value": 2}}, 400, "guardrails"), ({**body, "extra": 1}, 400, "extra")]
    for payload, status, words in cases:
        r = http.post("/admin/experiments", json=payload, headers=ml)
        assert r.status_code == status and words in r.text, (payload, r.status_code, r.text)

    created = http.post("/admin/experiments", json=body, headers=ml)
    assert created.status_code == 201, created.text
    exp = created.json()
    eid = exp["experiment_id"]
    assert (exp["control"], exp["treatment"], exp["share"], exp["status"]) == (active, popular, 0.2, "running")
    assert exp["created_by"] == "test-ml_engineer" and "salt" not in exp
    again = http.post("/admin/experiments", json=body, headers=ml)
    assert again.status_code == 409 and eid in again.json()["detail"]

    assert eid in [e["experiment_id"] for e in http.get("/admin/experiments", headers=ml).json()]
    report = http.get(f"/admin/experiments/{eid}", headers=ml)
    assert report.status_code == 200, report.text
    rep = report.json()
    assert rep["experiment"]["experiment_id"] == eid and set(rep["control"]["ctr"]) >= {"rate", "low", "high"}
    assert set(rep["difference"]["ctr"]) == {"diff", "low", "high", "p_value"}
    assert http.get("/admin/experiments/exp-nope", headers=ml).status_code == 404

    stopped = http.post(f"/admin/experiments/{eid}/stop", headers=ml, json={"note": "enough"})
    assert stopped.status_code == 200 and stopped.json()["status"] == "stopped"
    assert stopped.json()["reason"] == "enough" and stopped.json()["ended_by"] == "test-ml_engineer"
    assert http.post(f"/admin/experiments/{eid}/stop", headers=ml).status_code == 409
    assert http.post(f"/admin/experiments/{eid}/promote", headers=ml).status_code == 409
    audit = http.get("/admin/audit", headers=api_keys.headers("admin"), params={"limit": 1000}).json()["entries"]
    mine = [(e["action"], e["actor"]) for e in audit if e["target"] == f"experiment:{eid}"]
    assert mine == [("experiment.create", "test-ml_engineer"), ("experiment.stop", "test-ml_engineer")]


def test_arms_are_stable_in_answers_and_in_the_decision_log(http, api_keys, baselines, redis_client, no_experiments):
    active, popular = baselines
    ml = api_keys.headers("ml_engineer")
    created = http.post("/admin/experiments", json={"model": "recommender", "treatment": popular, "share": 0.5},
                        headers=ml)
    assert created.status_code == 201, created.text
    eid = created.json()["experiment_id"]
    exp = experiments.decode(redis_client.hget(EXPERIMENTS, eid))
    customers = list(range(1, 61))
    expected = {c: experiments.arm_of(exp, c) for c in customers}
    assert {"control", "treatment"} == set(expected.values())
    treated = next(c for c, arm in expected.items() if arm == "treatment")
    _wait(lambda: _recommend(http, treated)["model_version"] == popular, what="the treatment loaded")

    start = redis_client.xrevrange(DECISIONS_STREAM, count=1)
    after = start[0][0].decode() if start else "0-0"
    seen: dict[int, set[str]] = {}
    ids: dict[str, int] = {}
    for _round in range(3):
        for c in customers:
            answer = _recommend(http, c)
            seen.setdefault(c, set()).add(answer["model_version"])
            ids[answer["decision_id"]] = c
    for c in customers:
        assert seen[c] == {popular if expected[c] == "treatment" else active}, (c, seen[c], expected[c])

    def logged():
        rows = redis_client.xrange(DECISIONS_STREAM, min=f"({after}", max="+")
        mine = {f[b"decision_id"].decode(): f for _id, f in rows if f[b"decision_id"].decode() in ids}
        return mine if len(mine) == len(ids) else None

    for decision_id, fields in _wait(logged, 5.0, "the decision log").items():
        c = ids[decision_id]
        assert fields[b"experiment_id"].decode() == eid and fields[b"arm"].decode() == expected[c]
        assert fields[b"model_version"].decode() == (popular if expected[c] == "treatment" else active)
    assert http.post(f"/admin/experiments/{eid}/stop", headers=ml).status_code == 200
    _wait(lambda: _recommend(http, treated)["model_version"] == active, 5.0, "everyone back on control")


def test_promote_makes_the_treatment_active(http, api_keys, trained_models, feast_applied, no_experiments):
    active, newer = trained_models
    ml = api_keys.headers("ml_engineer")
    assert http.post("/admin/models/recommender/activate", headers=ml, json={"version": active}).status_code == 200
    try:
        eid = http.post("/admin/experiments", json={"model": "recommender", "treatment": newer, "ramp": [0.1, 0.5]},
                        headers=ml).json()["experiment_id"]
        promoted = http.post(f"/admin/experiments/{eid}/promote", headers=ml)
        assert promoted.status_code == 200, promoted.text
        assert promoted.json()["status"] == "promoted" and promoted.json()["ended_by"] == "test-ml_engineer"
        assert registry.active_version(feast_applied.models_dir, "recommender") == newer
        _wait(lambda: _recommend(http, 1)["model_version"] == newer, 10.0, "the promoted version")
        audit = http.get("/admin/audit", headers=api_keys.headers("admin"), params={"limit": 1000}).json()["entries"]
        assert [e["action"] for e in audit if e["target"] == f"experiment:{eid}"] == ["experiment.create",
                                                                                    "experiment.promote"]
        assert audit[-1]["action"] == "model.activate" and audit[-1]["after"] == newer
    finally:
        http.post("/admin/models/recommender/activate", headers=ml, json={"version": active})


def _kpi_counts(decisions: int, fallbacks: int) -> Counts:
    c = Counts(decisions=decisions, fallbacks=fallbacks)
    c.latency[latency_bucket(3.0)] = decisions
    return c


def test_unloadable_treatment_answers_with_control_and_the_guardrail_stops_it(
        http, api_keys, baselines, feast_applied, redis_client, write_features, no_experiments):
    """A treatment whose manifest names a variant this code does not have: it passes create's sha256 check but
    cannot load. Its customers get the control's answer with `model_unavailable`, under the treatment arm. The KPI
    totals the stream writes (here: those decisions' counts, written in the pantry/kpis.py layout) then breach the
    fallback-rate guardrail and the loop stops the experiment."""
    active, _popular = baselines
    models_dir = feast_applied.models_dir
    broken = f"{active}-broken"
    if broken not in registry.versions(models_dir, "recommender"):
        version = _baseline(feast_applied, "recommender", "random")
        staging = registry.staging_dir(models_dir, "recommender", broken)
        for path in (models_dir / "recommender" / version).iterdir():
            if path.name != registry.MANIFEST:
                (staging / path.name).hardlink_to(path)
        manifest = registry.read_manifest(models_dir / "recommender" / version)
        registry.publish(staging, msgspec.structs.replace(manifest, version=broken,
                                                          params={**manifest.params, "variant": "no-such"}))
    ml = api_keys.headers("ml_engineer")
    created = http.post("/admin/experiments", headers=ml, json={
        "model": "recommender", "treatment": broken, "share": 0.5, "guardrails": {"min_decisions": 20}})
    assert created.status_code == 201, created.text
    eid = created.json()["experiment_id"]
    exp = experiments.decode(redis_client.hget(EXPERIMENTS, eid))
    customers = range(9_300_000_001, 9_300_000_081)
    for c in customers:  # customers with a fresh session row (else every answer is a cold_start first)
        write_features("customer_session", (c,), {"session_events": 1}, AS_OF - timedelta(minutes=1))
    arms = {c: experiments.arm_of(exp, c) for c in customers}
    treated = [c for c, a in arms.items() if a == "treatment"]
    _wait(lambda: _recommend(http, treated[0], AS_OF)["fallback"] == "model_unavailable", 20.0,
          "the treatment's fallback")
    answers = {c: _recommend(http, c, AS_OF) for c in arms}
    for c, arm in arms.items():
        assert answers[c]["model_version"] == active  # the control answers everyone
        assert answers[c]["fallback"] == ("model_unavailable" if arm == "treatment" else None), (arm, answers[c])
    listed = {e["experiment_id"]: e for e in http.get("/admin/experiments", headers=ml).json()}
    assert listed[eid]["status"] == "running"
    report = http.get(f"/admin/experiments/{eid}", headers=ml).json()
    assert report["treatment_loaded"] is False and "unknown variant 'no-such'" in report["treatment_error"]

    # what the outcome flow keeps for these decisions (streaming/outcomes.py), in its layout
    counts = {"control": [0, 0], "treatment": [0, 0]}
    for c, arm in arms.items():
        counts[arm][0] += 1
        counts[arm][1] += answers[c]["fallback"] is not None
    day = datetime.now(UTC).date().isoformat()
    fields = {KpiKey(day, "recommender", active, eid, arm, "for_you").field(): encode_counts(_kpi_counts(*n))
              for arm, n in counts.items()}
    redis_client.hset(KPI_HASHES[0], mapping=fields)
    started = time.monotonic()
    try:
        stopped = _wait(lambda: (e := http.get(f"/admin/experiments/{eid}", headers=ml).json()["experiment"])[
            "status"] == "stopped" and e, 10.0, "the guardrail")
        took = time.monotonic() - started
        print(f"guardrail stop: {took:.2f} s after the KPI totals showed the breach; treatment decisions "
              f"{counts['treatment'][0]}")
        assert took < 5.0, took  # the loop checks every second
        assert stopped["reason"].startswith("guardrail fallback_rate") and stopped["ended_by"] == "guardrail"
        assert redis_client.hget(EXPERIMENTS_RUNNING, "recommender") is None
        audit = http.get("/admin/audit", headers=api_keys.headers("admin"), params={"limit": 1000}).json()["entries"]
        assert [(e["action"], e["actor"]) for e in audit if e["target"] == f"experiment:{eid}"][-1] == \
            ("experiment.stop", "guardrail")
        metrics = http.get("/metrics", headers=api_keys.headers("metrics")).text
        assert any(line.startswith("pantry_guardrail_breaches_total{") and 'guardrail="fallback_rate"' in line
                   and 'model="recommender"' in line for line in metrics.splitlines())
        _wait(lambda: _recommend(http, treated[0], AS_OF)["fallback"] is None, 5.0, "everyone back on control")
    finally:
        redis_client.hdel(KPI_HASHES[0], *fields)


def test_ramp_advances_while_guardrails_hold_and_never_promotes(http, api_keys, baselines, redis_client,
                                                                 no_experiments):
    active, popular = baselines
    ml = api_keys.headers("ml_engineer")
    created = http.post("/admin/experiments", headers=ml, json={
        "model": "recommender", "treatment": popular, "ramp": [0.1, 0.5], "stage_min_decisions": 10,
        "stage_min_seconds": 0})
    assert created.status_code == 201, created.text
    eid = created.json()["experiment_id"]
    assert created.json()["share"] == 0.1 and created.json()["stage"] == 0
    day = datetime.now(UTC).date().isoformat()
    healthy = {KpiKey(day, "recommender", v, eid, arm, "for_you").field(): encode_counts(_kpi_counts(n, 0))
               for v, arm, n in ((active, "control", 200), (popular, "treatment", 30))}
    redis_client.hset(KPI_HASHES[1], mapping=healthy)
    try:
        ramped = _wait(lambda: (e := http.get(f"/admin/experiments/{eid}", headers=ml).json()["experiment"])[
            "stage"] == 1 and e, 10.0, "the next stage")
        assert ramped["share"] == 0.5 and ramped["status"] == "running"
        time.sleep(2.5)  # the last stage done: it stays running (promotion is a person's call)
        assert http.get(f"/admin/experiments/{eid}", headers=ml).json()["experiment"]["status"] == "running"
        audit = http.get("/admin/audit", headers=api_keys.headers("admin"), params={"limit": 1000}).json()["entries"]
        ramps = [e for e in audit if e["target"] == f"experiment:{eid}" and e["action"] == "experiment.ramp"]
        assert [(e["before"]["share"], e["after"]["share"], e["actor"]) for e in ramps] == [(0.1, 0.5, "guardrail")]
    finally:
        redis_client.hdel(KPI_HASHES[1], *healthy)


def test_experiment_endpoints_never_answer_5xx_with_the_ml_engineer_key(api, api_keys, no_experiments):
    """The generic fuzz test sends admin operations without a key (401 only); these get the ml_engineer key, so the
    bodies and ids reach the service."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error

    schema = schemathesis.openapi.from_url(f"{api.url}/schema/openapi.json")
    operations = [op for op in (r.ok() for r in schema.get_all_operations()) if op.path.startswith("/admin/experim")]
    assert len(operations) == 5
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                  database=None)
        def check(case) -> None:
            case.call_and_validate(checks=[not_a_server_error], timeout=10, headers=api_keys.headers("ml_engineer"))

        check()
