"""Console pages over plain HTTP: each renders within its server-time budget, the roles decide what opens, console
actions are audited under the operator's key id, and a refused experiment start says why."""

from __future__ import annotations

import re
import statistics

import httpx

from load_tests.console_shots import PAGES, server_ms
from tests.serving.conftest import csrf_of

BUDGET_MS = 200.0  # each page, server time (the Server-Timing header), median of LOADS
LOADS = 5


def test_every_page_renders_within_its_server_time_budget(console):
    admin = console("admin")
    for path in PAGES.values():
        answers = [admin.get(path) for _ in range(LOADS)]
        assert all(a.status_code == 200 for a in answers), (path, [a.status_code for a in answers])
        median = statistics.median(server_ms(a.headers) for a in answers)
        assert median < BUDGET_MS, f"{path}: {median:.1f} ms server time (budget {BUDGET_MS:g} ms)"


def test_each_role_opens_its_pages_only(console):
    allowed = {"merchandiser": {"/console", "/console/campaigns"},
               "ml_engineer": {"/console", "/console/decisions", "/console/models", "/console/features"},
               "client": {"/console"}}
    for role, pages in allowed.items():
        client = console(role)
        for path in PAGES.values():
            status = client.get(path).status_code
            assert status == (200 if path in pages else 403), (role, path, status)


def test_a_refused_experiment_start_says_why(console, trained_models):
    ml = console("ml_engineer")
    token = csrf_of(ml.get("/console/models").text)
    bad = ml.post("/console/models/experiments", data={"csrf_token": token, "model": "recommender",
                                                       "treatment": "no-such-version", "share": "0.1"})
    assert bad.status_code == 404 and "has no version" in bad.text
    nothing = ml.post("/console/models/experiments", data={"csrf_token": token, "model": "recommender",
                                                           "treatment": "x", "share": ""})
    assert nothing.status_code == 400 and "give a share" in nothing.text
    silly = ml.post("/console/models/experiments", data={"csrf_token": token, "model": "recommender",
                                                         "treatment": "x", "share": "lots"})
    assert silly.status_code == 400 and "is not a number" in silly.text


def test_every_console_route_but_the_login_needs_a_session(api, feast_applied):
    """Walks the app's routes: without a session cookie, every console page and action goes to the login page."""
    from serving.app import create_app

    app = create_app(feast_applied)
    params = {"campaign_id": "1", "name": "recommender", "experiment_id": "exp-x"}
    checked = 0
    with httpx.Client(base_url=api.url, timeout=10.0) as anonymous:
        for route in app.routes:
            if not route.path.startswith("/console") or route.path.startswith(("/console/login", "/console/static")):
                continue
            path = re.sub(r"\{(\w+):\w+\}", lambda m: params[m.group(1)], route.path)
            for method in sorted(set(getattr(route, "methods", ())) - {"OPTIONS", "HEAD"}):
                answer = anonymous.request(method, path, data={"csrf_token": "x"} if method == "POST" else None)
                assert answer.status_code == 303, (method, path, answer.status_code)
                assert answer.headers["location"].startswith("/console/login"), (method, path)
                checked += 1
    assert checked >= 12, checked
