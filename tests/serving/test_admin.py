"""Admin: API keys and roles, campaign approvals (governance), model activation/rollback and hot reload."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import httpx
import pytest

from serving.campaigns import Approval, Campaign, CampaignBook, status_of

MERCH = {"X-API-Key": "merch-demo-key"}
ML = {"X-API-Key": "ml-demo-key"}
ADMIN = {"X-API-Key": "admin-demo-key"}


def test_keys_and_roles(http):
    assert http.get("/admin/campaigns").status_code == 401
    assert http.get("/admin/campaigns", headers={"X-API-Key": "guess"}).status_code == 401
    assert http.get("/admin/campaigns", headers=ML).status_code == 403
    assert http.get("/admin/models", headers=MERCH).status_code == 403
    assert http.post("/admin/campaigns/1/approve", headers=ML).status_code == 403
    assert http.get("/admin/campaigns", headers=MERCH).status_code == 200
    assert http.get("/admin/models", headers=ADMIN).status_code == 200


def test_merchandiser_approves_and_rejects(http):
    campaigns = http.get("/admin/campaigns", headers=MERCH).json()
    assert campaigns, "the dataset has campaigns"
    cid = campaigns[0]["campaign_id"]
    approved = http.post(f"/admin/campaigns/{cid}/approve", headers=MERCH, json={"note": "ok for spring"})
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approved" and approved.json()["by"].startswith("merchandiser:")
    listed = {c["campaign_id"]: c for c in http.get("/admin/campaigns", headers=MERCH).json()}
    assert listed[cid]["status"] == "approved" and listed[cid]["note"] == "ok for spring"
    rejected = http.post(f"/admin/campaigns/{cid}/reject", headers=MERCH)
    assert rejected.json()["status"] == "rejected"
    assert http.post("/admin/campaigns/999999/approve", headers=MERCH).status_code == 404


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


def test_activate_hot_reload_and_rollback(http, api, two_versions, feast_applied):
    from pantry.models import registry

    old, new = two_versions
    response = http.post("/admin/models/recommender/activate", headers=ML, json={"version": old})
    assert response.status_code == 200, response.text
    assert response.json()["loaded"] == old
    _wait_version(http, old)

    # requests keep flowing while ACTIVE switches on disk (as another worker or `pantry models activate` would)
    failures: list[str] = []
    seen: set[str] = set()
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(base_url=api.url, timeout=5) as client:
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

    rolled = http.post("/admin/models/recommender/rollback", headers=ML)
    assert rolled.status_code == 200, rolled.text
    assert rolled.json()["active"] == old and rolled.json()["loaded"] == old
    assert http.post("/admin/models/recommender/activate", headers=ML,
                     json={"version": "no-such-version"}).status_code == 400
    assert http.post("/admin/models/nope/activate", headers=ML, json={"version": old}).status_code == 404


def test_corrupt_artifact_is_refused_and_old_version_keeps_serving(http, two_versions, feast_applied):
    old, new = two_versions
    http.post("/admin/models/recommender/activate", headers=ML, json={"version": old})
    _wait_version(http, old)
    victim = next(p for p in sorted((feast_applied.models_dir / "recommender" / new).iterdir())
                  if p.name != "manifest.json")
    original = victim.read_bytes()
    try:
        victim.write_bytes(original + b"tampered")
        response = http.post("/admin/models/recommender/activate", headers=ML, json={"version": new})
        assert response.status_code == 400 and "sha256" in response.json()["detail"]
        assert _served_version(http) == old
    finally:
        victim.write_bytes(original)
