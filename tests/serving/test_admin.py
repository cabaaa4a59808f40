"""Admin: API keys and roles, campaign approvals (governance), model activation/rollback and hot reload."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import httpx
import pytest

from serving.campaigns import Approval, Campaign, CampaignBook, status_of


def _audit(http, api_keys, target: str) -> list[dict]:
    """Every audit entry for `target`, read page by page through GET /admin/audit (pages of 2: pagination is used)."""
    out, after = [], None
    while True:
        page = http.get("/admin/audit", headers=api_keys.headers("admin"),
                        params={"limit": 2, **({"after": after} if after else {})})
        assert page.status_code == 200, page.text
        out += [e for e in page.json()["entries"] if e["target"] == target]
        after = page.json()["next_after"]
        if after is None:
            return out


def test_merchandiser_approves_and_rejects_and_each_decision_is_kept(http, api_keys):
    merch = api_keys.headers("merchandiser")
    campaigns = http.get("/admin/campaigns", headers=merch).json()
    assert campaigns, "the dataset has campaigns"
    cid = campaigns[0]["campaign_id"]
    before = _audit(http, api_keys, f"campaign:{cid}")
    approved = http.post(f"/admin/campaigns/{cid}/approve", headers=merch, json={"note": "ok for spring"})
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approved" and approved.json()["by"] == "test-merchandiser"
    listed = {c["campaign_id"]: c for c in http.get("/admin/campaigns", headers=merch).json()}
    assert listed[cid]["status"] == "approved" and listed[cid]["note"] == "ok for spring"
    rejected = http.post(f"/admin/campaigns/{cid}/reject", headers=merch)
    assert rejected.json()["status"] == "rejected"
    assert http.post("/admin/campaigns/999999/approve", headers=merch).status_code == 404

    # the approval is not lost when the rejection overwrites the current state: both are in the history
    history = _audit(http, api_keys, f"campaign:{cid}")[len(before):]
    assert [(e["action"], e["actor"]) for e in history] == [("campaign.approve", "test-merchandiser"),
                                                              ("campaign.reject", "test-merchandiser")]
    assert history[0]["after"]["status"] == "approved" and history[0]["note"] == "ok for spring"
    assert history[1]["before"] == history[0]["after"] and history[1]["after"]["status"] == "rejected"
    assert history[0]["at"] <= history[1]["at"]


def test_audit_page_size_is_bounded(http, api_keys):
    assert http.get("/admin/audit", headers=api_keys.headers("admin"), params={"limit": 5000}).status_code == 400
    assert http.get("/admin/audit", headers=api_keys.headers("admin"), params={"after": "x"}).status_code == 400
    assert http.get("/admin/audit", headers=api_keys.headers("merchandiser")).status_code == 403


def test_changed_campaign_needs_a_new_approval():
    c = Campaign(1, "A", datetime(2017, 3, 1, tzinfo=UTC), datetime(2017, 4, 1, tzinfo=UTC))
    book = CampaignBook({1: c})
    book.approvals = {1: Approval("approved", c.fingerprint, "merchandiser:x", "2017-01-01")}
    assert book.offerable(datetime(2017, 3, 15, tzinfo=UTC)) == {1}
    assert book.offerable(datetime(2017, 5, 1, tzinfo=UTC)) == frozenset()  # not active then
    moved = Campaign(1, "A", datetime(2017, 3, 1, tzinfo=UTC), datetime(2017, 6, 1, tzinfo=UTC))
    book.campaigns = {1: moved}  # the campaign changed (new end date): the old approval no longer holds
    assert status_of(moved, book.approvals[1]) == "pending"
    assert book.offerable(datetime(2017, 3, 15, tzinfo=UTC)) == frozenset()


@pytest.fixture()
def two_versions(trained_models):
    return trained_models


def _served_version(http) -> str:
    return http.post("/v1/recommendations", json={"customer_id": 1, "k": 3}).json()["model_version"]


def _wait_version(http, version: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _served_version(http) == version:
            return
        time.sleep(0.1)
    pytest.fail(f"still serving {_served_version(http)}, expected {version}")


def test_activate_hot_reload_and_rollback(http, api_keys, api, two_versions, feast_applied):
    ml = api_keys.headers("ml_engineer")
    from pantry.models import registry

    old, new = two_versions
    response = http.post("/admin/models/recommender/activate", headers=ml, json={"version": old})
    assert response.status_code == 200, response.text
    assert response.json()["loaded"] == old
    _wait_version(http, old)

    # requests keep flowing while ACTIVE switches on disk (as another worker or `pantry models activate` would)
    failures: list[str] = []
    seen: set[str] = set()
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(base_url=api.url, timeout=5, headers=api_keys.headers("client")) as client:
            while not stop.is_set():
                r = client.post("/v1/recommendations", json={"customer_id": 1, "k": 5})
                if r.status_code != 200:
                    failures.append(f"{r.status_code} {r.text}")
                else:
                    seen.add(r.json()["model_version"])

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        registry.activate(feast_applied.models_dir, "recommender", new)
        _wait_version(http, new)  # the worker's poller picked it up by itself
        deadline = time.monotonic() + 5
        while new not in seen and time.monotonic() < deadline:  # and the hammering client saw it too
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join()
    assert not failures
    assert {old, new} <= seen

    rolled = http.post("/admin/models/recommender/rollback", headers=ml)
    assert rolled.status_code == 200, rolled.text
    assert rolled.json()["active"] == old and rolled.json()["loaded"] == old
    switches = _audit(http, api_keys, "model:recommender")
    assert switches[-1]["action"] == "model.rollback" and switches[-1]["actor"] == "test-ml_engineer"
    assert (switches[-1]["before"], switches[-1]["after"]) == (new, old)
    activated = [e for e in switches if e["action"] == "model.activate"][-1]
    assert activated["actor"] == "test-ml_engineer" and activated["after"] == old
    assert http.post("/admin/models/recommender/activate", headers=ml,
                     json={"version": "no-such-version"}).status_code == 400
    assert http.post("/admin/models/nope/activate", headers=ml, json={"version": old}).status_code == 404


def test_corrupt_artifact_is_refused_and_old_version_keeps_serving(http, api_keys, two_versions, feast_applied):
    ml = api_keys.headers("ml_engineer")
    old, new = two_versions
    http.post("/admin/models/recommender/activate", headers=ml, json={"version": old})
    _wait_version(http, old)
    victim = next(p for p in sorted((feast_applied.models_dir / "recommender" / new).iterdir())
                  if p.name != "manifest.json")
    original = victim.read_bytes()
    try:
        victim.write_bytes(original + b"tampered")
        response = http.post("/admin/models/recommender/activate", headers=ml, json={"version": new})
        assert response.status_code == 400 and "sha256" in response.json()["detail"]
        assert _served_version(http) == old
    finally:
        victim.write_bytes(original)
