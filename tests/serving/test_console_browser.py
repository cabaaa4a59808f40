"""The console in a real headless Chromium (Playwright on the distribution's package, load_tests/browser.py) against
the session's server: a merchandiser approves a pending campaign and /v1/next-best-action offers its coupon; an ML
engineer rolls a model back and /v1/recommendations answers with the previous version; a merchandiser cannot open the
models page; a form without the CSRF token is refused; the pages work with the keyboard and at a phone's width."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from load_tests.browser import DESKTOP, PHONE, chromium, log_in
from pantry.keys import CAMPAIGN_APPROVALS
from pantry.redis_server import sync_client
from serving.campaigns import Approval, encode_approval, load_campaigns
from tests.serving.test_models import _enrolments, _wait_served

PAGES = ("/console", "/console/campaigns", "/console/decisions", "/console/models", "/console/features")


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with chromium() as b:
        yield b


@pytest.fixture()
def page_for(browser, api, api_keys, tmp_path):
    """`page_for(role, viewport=DESKTOP)`: a fresh browser context (no cookies) logged in with that role's key."""
    contexts = []

    def make(role: str, viewport: dict = DESKTOP):
        context = browser.new_context(viewport=viewport)
        contexts.append(context)
        page = context.new_page()
        log_in(page, api.url, api_keys.keys[role])
        return page

    yield make
    for context in contexts:
        context.close()


def _offered(http, customer: int, when: datetime, version: str) -> set[int]:
    body = {"customer_id": customer, "k": 5, "as_of": when.isoformat()}
    answer = _wait_served(http, "/v1/next-best-action", body, version)
    return {a["campaign_id"] for a in answer["actions"] if "campaign_id" in a}


def _offered_eventually(http, customer, when, version, campaign_id, want: bool, timeout_s: float = 5.0) -> bool:
    """Whether the campaign's coupon is offered (`want`) within the time approvals take to reach every worker."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (campaign_id in _offered(http, customer, when, version)) == want:
            return True
        time.sleep(0.2)
    return False


def test_merchandiser_approves_a_pending_campaign_and_its_coupon_is_offered(
        http, api, api_keys, page_for, trained_models, feast_applied, tmp_path):
    from pantry.models import registry

    nba = registry.active_version(feast_applied.models_dir, "next_best_action")
    merch = api_keys.headers("merchandiser")
    enrolments = _enrolments(feast_applied)
    for cid in {c for _, c, _ in enrolments}:
        assert http.post(f"/admin/campaigns/{cid}/approve", headers=merch).status_code == 200
    time.sleep(1.5)
    customer, when, campaign_id = next(
        (customer, when, cid) for customer, _, when in enrolments
        for cid in _offered(http, customer, when, nba))
    # the campaign's end date moved since its approval (as when the source data changes): pending again
    campaign = load_campaigns(feast_applied)[campaign_id]
    old_end = "2016-01-01"
    stale = Approval("approved", "0" * 16, "test-merchandiser", datetime.now(UTC).isoformat(), "before the change",
                     campaign.campaign_type, campaign.start.date().isoformat(), old_end)
    sync_client(feast_applied).hset(CAMPAIGN_APPROVALS, str(campaign_id), encode_approval(stale))
    assert _offered_eventually(http, customer, when, nba, campaign_id, want=False), "a pending campaign is not offered"

    page = page_for("merchandiser")
    page.goto(f"{api.url}/console/campaigns")
    card = page.locator(f"#campaign-{campaign_id}")
    assert card.is_visible()
    assert f"end: {old_end} \u2192 {campaign.end.date().isoformat()}" in card.inner_text()  # what changed
    page.screenshot(path=str(tmp_path / "campaigns-pending.png"), full_page=True)
    card.get_by_label(f"Note for campaign {campaign_id}").fill("checked the new dates")
    card.get_by_role("button", name=f"Approve {campaign_id}").click()
    assert f"Campaign {campaign_id} approved" in page.get_by_role("status").inner_text()
    assert not page.locator(f"#campaign-{campaign_id}").count(), "no longer in the queue"
    history = page.locator("section[aria-labelledby=history-h] tbody tr").first.inner_text()
    assert "test-merchandiser" in history and "approve" in history and "checked the new dates" in history

    assert _offered_eventually(http, customer, when, nba, campaign_id, want=True), \
        "approved in the console, the coupon is offered by /v1/next-best-action"
    audit = http.get("/admin/audit", headers=api_keys.headers("admin"), params={"limit": 1000}).json()["entries"]
    mine = [e for e in audit if e["target"] == f"campaign:{campaign_id}" and e["note"] == "checked the new dates"]
    assert mine and mine[-1]["actor"] == "test-merchandiser" and mine[-1]["action"] == "campaign.approve"
    assert any(e["action"] == "console.login" and e["actor"] == "test-merchandiser" for e in audit)


def _served_version(http) -> str:
    return http.post("/v1/recommendations", json={"customer_id": 1, "k": 3}).json()["model_version"]


def _wait_version(http, version: str, timeout_s: float = 10.0) -> str:
    deadline = time.monotonic() + timeout_s
    while (served := _served_version(http)) != version and time.monotonic() < deadline:
        time.sleep(0.1)
    return served


def test_ml_engineer_rolls_back_a_model_from_the_page(http, api, api_keys, page_for, trained_models):
    active, newer = trained_models
    ml = api_keys.headers("ml_engineer")
    assert http.post("/admin/models/recommender/activate", headers=ml, json={"version": newer}).status_code == 200
    assert _wait_version(http, newer) == newer

    page = page_for("ml_engineer")
    page.goto(f"{api.url}/console/models")
    model = page.locator("#model-recommender")
    assert "ACTIVE" in model.inner_text() and newer in model.locator("dl").inner_text()
    model.get_by_role("button", name="Roll back recommender").click()
    assert "recommender rolled back" in page.get_by_role("status").inner_text()
    assert _wait_version(http, active) == active, "after the rollback, /v1/recommendations answers the previous one"
    assert active in page.locator("#model-recommender dl").inner_text()


def test_a_merchandiser_cannot_open_the_models_page(api, page_for):
    page = page_for("merchandiser")
    answer = page.goto(f"{api.url}/console/models")
    assert answer.status == 403
    assert "needs the `ml_engineer` role" in page.get_by_role("alert").inner_text()
    nav = page_for("merchandiser").locator("nav").inner_text()
    assert "Campaigns" in nav and "Models" not in nav, "the navigation shows only the pages the role may open"


def test_a_form_without_the_csrf_token_is_refused(http, api, api_keys, page_for):
    page = page_for("merchandiser")
    campaigns = http.get("/admin/campaigns", headers=api_keys.headers("merchandiser")).json()
    target = campaigns[-1]
    url = f"{api.url}/console/campaigns/{target['campaign_id']}/reject"
    # the browser's own session cookie, no token / a wrong token: refused, nothing changed
    for form in ({"note": "forged"}, {"note": "forged", "csrf_token": "x" * 43}):
        refused = page.request.post(url, form=form, max_redirects=0)
        assert refused.status == 403, refused.text()
        assert "CSRF" in refused.text()
    after = {c["campaign_id"]: c for c in http.get("/admin/campaigns", headers=api_keys.headers("merchandiser")).json()}
    assert after[target["campaign_id"]]["status"] == target["status"]
    # the login form too: a post without its cookie's token does not log in
    anonymous = httpx.post(f"{api.url}/console/login", data={"api_key": api_keys.keys["admin"], "csrf_token": "x"})
    assert anonymous.status_code == 403 and "pantry_console=" not in anonymous.headers.get("set-cookie", "")


def test_no_session_goes_to_the_login_page_and_logout_ends_it(browser, api, api_keys):
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{api.url}/console/models")
    assert page.url.startswith(f"{api.url}/console/login")
    page.get_by_label("API key").fill("pantry_not-a-key")
    page.keyboard.press("Enter")
    assert "Unknown API key" in page.get_by_role("alert").inner_text()
    log_in(page, api.url, api_keys.keys["ml_engineer"])
    page.get_by_role("button", name="Log out").click()
    page.goto(f"{api.url}/console/models")
    assert page.url.startswith(f"{api.url}/console/login"), "the session ended with the logout"
    context.close()


def test_keyboard_labels_and_a_phone_width(api, page_for):
    page = page_for("admin", PHONE)
    for path in PAGES:
        answer = page.goto(f"{api.url}{path}")
        assert answer.status == 200, (path, answer.status)
        unlabelled = page.evaluate("""() => [...document.querySelectorAll('input, select, textarea')]
            .filter(e => e.type !== 'hidden')
            .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
            .map(e => e.name || e.id)""")
        assert unlabelled == [], (path, unlabelled)
        overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"{path} scrolls sideways at {PHONE['width']} px ({overflow} px)"
    # keyboard: the first Tab reaches the skip link, and Tab goes on through every page's link
    page.goto(f"{api.url}/console/models")
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.textContent") == "Skip to content"
    seen = set()
    for _ in range(8):
        page.keyboard.press("Tab")
        seen.add(page.evaluate("() => document.activeElement.getAttribute('href')"))
    assert set(PAGES) <= seen, seen
    # Enter on the skip link moves the focus to the content
    page.goto(f"{api.url}/console/models")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    assert page.evaluate("() => document.activeElement.id") == "main"
