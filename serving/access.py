"""Who may call what: one check of every routed request (`authorize`, called by serving/app.py's middleware) and
one route -> scope map (`ROUTE_SCOPES`).

Every route under /v1/ and /admin/ needs a key with the scope its path maps to (longest prefix wins); a route there
that maps to no scope stops the app at startup (`check_routes`), so a new endpoint cannot be open by accident.
/healthz, /readyz and /schema are open; /metrics needs the `metrics` scope unless PANTRY_METRICS_OPEN=1.

A key comes as `X-API-Key: K` or `Authorization: Bearer K`. No key, or a key that is not configured -> 401; a key
without the scope -> 403; both bodies say what is missing. The check puts the key's `ApiKey` (id and scopes) in
`scope["auth"]`: the rate limiter, the access log and the audit log use its id, never the key.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from typing import Final, NamedTuple

from litestar import Litestar
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler

from pantry import apikeys
from pantry.apikeys import ApiKey, KeyTable
from pantry.settings import Settings

log = logging.getLogger("pantry.serving")

ANY_KEY: Final = "any valid key"  # the route needs a configured key, whatever its scopes
OPEN: Final = None  # no key needed

# path prefix -> scope. Extend here when adding a route under /v1/ or /admin/ (or set opt={"scope": ...} on the
# handler, which wins over this map).
ROUTE_SCOPES: dict[str, str | None] = {
    "/v1/recommendations": "answers",
    "/v1/substitutions": "answers",
    "/v1/next-best-action": "answers",
    "/v1/events": "ingest",
    "/v1/customers": "ingest",  # a shopper's preferences, set by the order flow (serving/controllers/preferences.py)
    "/v1/features": "features",
    # Feast's feature-server routes (serving/controllers/feast.py): one key for a Feast client, which reads and writes
    # (the shared contract, ../shared/ARCHITECTURE.md "Keys and scopes")
    "/get-online-features": "features",
    "/push": "features",
    "/write-to-online-store": "features",
    "/v1/clock": ANY_KEY,
    "/admin/campaigns": "merchandiser",
    "/admin/models": "ml_engineer",
    "/admin/kpis": "ml_engineer",
    "/admin/experiments": "ml_engineer",  # experiments and their reports (serving/controllers/experiments.py)
    "/admin/drift": "ml_engineer",  # PSI of each served model's inputs and scores (serving/controllers/drift.py)
    "/admin/audit": "admin",
    "/admin/customers": "admin",  # erasure (POST /admin/customers/{id}/forget)
    "/healthz": OPEN,
    "/readyz": OPEN,
    "/schema": OPEN,
    "/metrics": "metrics",
    "/console": OPEN,  # its own login (serving/console/session.py): a session cookie, a role per page, CSRF on forms
}
PROTECTED_PREFIXES: Final = ("/v1/", "/admin/")
_LOOPBACK_NAMES: Final = ("localhost",)
_PARAM = re.compile(r"\{(\w+):[^}]+\}")


def scope_for(path: str, settings: Settings, handler: BaseRouteHandler | None = None) -> str | None:
    """The scope a route needs (None: open). Raises LookupError for a /v1/ or /admin/ route with no scope."""
    if handler is not None and "scope" in handler.opt:
        return handler.opt["scope"]
    if path == "/metrics" and settings.metrics_open:
        return OPEN
    matches = [prefix for prefix in ROUTE_SCOPES if path == prefix or path.startswith(prefix.rstrip("/") + "/")]
    if matches:
        return ROUTE_SCOPES[max(matches, key=len)]
    if path.startswith(PROTECTED_PREFIXES) or path.rstrip("/") in ("/v1", "/admin"):
        raise LookupError(f"route {path} has no scope: add it to serving.access.ROUTE_SCOPES")
    return OPEN


def presented_key(headers) -> str | None:
    """The key of a request's raw ASGI headers (`[(name, value), ...]`, names lower-case)."""
    key = auth = None
    for name, value in headers:
        if name == b"x-api-key" and key is None:
            key = value
        elif name == b"authorization" and auth is None:
            auth = value
    if key and key.strip():
        return key.strip().decode("latin-1")
    if auth:
        kind, _, token = auth.strip().partition(b" ")
        if kind.lower() == b"bearer" and token.strip():
            return token.strip().decode("latin-1")
    return None


class Refusal(NamedTuple):
    """Why a request may not reach its route: 401 (no or unknown key) or 403 (a key without the scope)."""
    status: int
    detail: str
    headers: dict[str, str]


_CHALLENGE: Final = {"WWW-Authenticate": 'Bearer realm="pantry"'}


def authorize(scope, route_scopes: dict[str, str | None], table: KeyTable) -> Refusal | None:
    """The key check of every request, once routed (serving/app.py's middleware calls it before the route runs;
    `scope["path_template"]` is the matched route's). Puts the accepted key's `ApiKey` in `scope["auth"]`.
    A plain function on the ASGI scope, not a Litestar guard: a guard is called with a copy of its route handler
    (`copy(handler)` per request), which cost /v1/features ~4% of its throughput (docs/DECISIONS.md)."""
    if scope["method"] == "OPTIONS":  # CORS preflight / Allow: no data, and browsers send no key with it
        return None
    template = scope.get("path_template") or scope["path"]
    needed = route_scopes.get(template, "admin")  # a route not seen at startup: fail closed
    if needed is None:
        return None
    key = presented_key(scope["headers"])
    where = f"{scope['method']} {template}"
    if not key:
        return Refusal(401, f"{where} needs an API key ({_describe(needed)}): send `X-API-Key: KEY` or "
                            "`Authorization: Bearer KEY`", _CHALLENGE)
    principal = table.lookup(key)
    if principal is None:
        detail = "no API keys are configured on this server" if not len(table) else "unknown API key"
        return Refusal(401, f"{where}: {detail}", _CHALLENGE)
    scope["auth"] = principal
    if needed != ANY_KEY and not principal.has(needed):
        return Refusal(403, f"{where} needs a key with the `{needed}` scope; key `{principal.key_id}` has "
                            f"{', '.join(sorted(principal.scopes))}", {})
    return None


def _describe(needed: str) -> str:
    return "any configured key" if needed == ANY_KEY else f"scope `{needed}`"


def actor(connection: ASGIConnection) -> str:
    """Who did it, for the audit log: the key id the key check accepted."""
    principal: ApiKey | None = connection.scope.get("auth")
    if principal is None:  # a handler reached without the key check: a wiring bug, refuse rather than log "nobody"
        raise NotAuthorizedException(detail="no authenticated key for this action")
    return principal.key_id


def key_id(scope) -> str | None:
    principal = scope.get("auth")
    return principal.key_id if isinstance(principal, ApiKey) else None


def check_routes(app: Litestar, settings: Settings) -> dict[str, str | None]:
    """Path template (`template_of`) -> needed scope for every route of the app; LookupError for an unmapped /v1/
    or /admin/ route. (The OPTIONS handler Litestar adds to every route carries no data and passes the key check.)"""
    out: dict[str, str | None] = {}
    for route in app.routes:
        handlers = [h for h in getattr(route, "route_handlers", [])
                    if set(getattr(h, "http_methods", ())) != {"OPTIONS"}]
        scopes = {scope_for(route.path, settings, h) for h in handlers} or {scope_for(route.path, settings)}
        if len(scopes) > 1:
            raise LookupError(f"route {route.path}: its handlers need different scopes {scopes}; split the path")
        out[template_of(route.path)] = scopes.pop()
    return out


def template_of(path: str) -> str:
    """A route path as the router puts it in `scope["path_template"]`: `/x/{id:int}` -> `/x/{id}`."""
    return _PARAM.sub(r"{\1}", path)


# ---- keys at startup -----------------------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class DemoKeysRefused(RuntimeError):
    pass


def load_keys(settings: Settings, host: str | None = None) -> KeyTable:
    """The configured keys; DemoKeysRefused when `make demo`'s keys would serve on a non-loopback host."""
    table = apikeys.load(settings.api_keys, settings.api_keys_path)
    host = host or settings.host
    if table.demo_files and not is_loopback(host) and not settings.allow_demo_keys:
        files = ", ".join(str(f) for f in table.demo_files)
        raise DemoKeysRefused(
            f"refusing to serve on {host}: the API keys in {files} were made by `make demo` and their plaintext sits "
            f"in {settings.data_dir / 'demo-keys.env'}. Serve on 127.0.0.1, or make real keys with `pantry keys new` "
            "in another file (PANTRY_API_KEYS_FILE) or PANTRY_API_KEYS, or set PANTRY_ALLOW_DEMO_KEYS=1 to serve "
            "the demo keys anyway")
    if not len(table):
        log.warning("no API keys configured (PANTRY_API_KEYS, %s): every /v1 and /admin request will get 401; "
                    "make one with `pantry keys new --id NAME --scopes answers`", settings.api_keys_path)
    return table
