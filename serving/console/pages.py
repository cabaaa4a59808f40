"""What every console page shares: the navigation (only the pages the operator's role may open), the render call
that gives each template the operator, its CSRF token and the page's server time, and the redirect after an action
(POST -> 303 -> GET, with a message chosen from a fixed list so no text travels in the URL)."""

from __future__ import annotations

import time
from typing import Any, Final
from urllib.parse import urlencode

import msgspec
from litestar import Request
from litestar.response import Redirect, Template

from serving.console.session import CSRF_FIELD, Operator


class NavItem(msgspec.Struct, frozen=True):
    path: str
    title: str
    role: str | None  # None: any logged-in operator


NAV: Final = (
    NavItem("/console", "Overview", None),
    NavItem("/console/campaigns", "Campaigns", "merchandiser"),
    NavItem("/console/decisions", "Decisions", "ml_engineer"),
    NavItem("/console/models", "Models and experiments", "ml_engineer"),
    NavItem("/console/features", "Features and stream", "ml_engineer"),
)

# ?done=<code> after an action -> the message shown (format fields from ?target=)
MESSAGES: Final = {
    "approved": "Campaign {target} approved: it can be offered while it runs.",
    "rejected": "Campaign {target} rejected: it is never offered.",
    "activated": "{target} is now ACTIVE; every worker serves it within a second.",
    "rolled_back": "{target} rolled back to its previous version.",
    "experiment_started": "Experiment {target} started.",
    "experiment_promoted": "Experiment {target} promoted: its treatment is ACTIVE.",
    "experiment_stopped": "Experiment {target} stopped: everyone is back on the control.",
}


def render(request: Request, operator: Operator, template: str, title: str, **context: Any) -> Template:
    done = request.query_params.get("done")
    target = request.query_params.get("target", "")[:80]
    message = MESSAGES[done].format(target=target) if done in MESSAGES else None
    started = request.scope.get("pantry.started", time.perf_counter())  # set by serving/app.py's middleware
    return Template(template_name=template, context={
        "title": title, "operator": operator, "csrf_field": CSRF_FIELD, "csrf": operator.csrf,
        "nav": [n for n in NAV if n.role is None or operator.may(n.role)], "current": request.scope["path"],
        "message": message, "server_ms": lambda: (time.perf_counter() - started) * 1000, **context})


def after_action(path: str, done: str, target: str | int) -> Redirect:
    return Redirect(f"{path}?{urlencode({'done': done, 'target': str(target)})}", status_code=303)
