"""The Litestar app: `create_app(settings)`; errors map to HTTP statuses in one place (`_EXCEPTION_HANDLERS`).

Startup (lifespan) loads the models, the popularity snapshot, the campaigns, the Feast layout and the Redis client
(explicit timeouts from settings); the API keys and the scope of every route are fixed when the app is built
(serving/access.py); background tasks hot-reload models, refresh campaign approvals and flush the
decision log.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from urllib.parse import urlencode

from litestar import Litestar, Request, Response
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException, NotFoundException, ValidationException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR, HTTP_503_SERVICE_UNAVAILABLE
from litestar.types import ASGIApp, Receive, Scope, Send

from pantry.erasure import ErasureError
from pantry.scoring import ModelError
from pantry.settings import Settings, get_settings
from serving import console, experiment_guard, metrics, request_id
from serving import problems as problems_
from serving.access import Refusal, authorize, check_routes, key_id, load_keys
from serving.access_log import AccessLogger, access_logger
from serving.console import traffic
from serving.console.session import ConsoleForbidden, LoginRequired
from serving.controllers.admin import (
    AdminAuditController,
    AdminCampaignsController,
    AdminCustomersController,
    AdminModelsController,
)
from serving.controllers.clock import ClockController
from serving.controllers.drift import AdminDriftController
from serving.controllers.events import EventsController
from serving.controllers.experiments import AdminExperimentsController
from serving.controllers.feast import FeastServerController
from serving.controllers.features import FeaturesController
from serving.controllers.health import HealthController
from serving.controllers.kpis import AdminKpisController
from serving.controllers.next_best_action import NextBestActionController
from serving.controllers.preferences import PreferencesController
from serving.controllers.recommendations import RecommendationsController
from serving.controllers.substitutions import SubstitutionsController
from serving.experiments import ExperimentConflict, ExperimentRejected, UnknownExperiment
from serving.feast_server import FeastWriteRejected
from serving.governance import UnknownCampaign, UnknownModel
from serving.ingest import BatchRejected, BatchTooLarge
from serving.limits import enforce_limits
from serving.redis_guard import StoreUnavailable, begin_request, end_request
from serving.services import Services

log = logging.getLogger("pantry.serving")


# ---- errors -> statuses (the one place) ----------------------------------------------------------------------


def _validation_error(request: Request, exc: ValidationException) -> Response:
    problems = []
    for item in exc.extra or []:
        if isinstance(item, dict):
            where = item.get("key") or item.get("source") or "body"
            problems.append(f"{where}: {item.get('message')}")
    detail = exc.detail if not problems else f"{exc.detail}: " + "; ".join(problems)
    return problems_.response(400, detail, request.url.path, extra=exc.extra or None)


def _http_error(request: Request, exc: HTTPException) -> Response:
    extra = exc.extra if isinstance(exc.extra, list) else [exc.extra] if exc.extra else None
    return problems_.response(exc.status_code, exc.detail, request.url.path, headers=exc.headers, extra=extra)


def _events_rejected(request: Request, exc: BatchRejected) -> Response:
    return problems_.response(400, str(exc), request.url.path, errors=exc.errors)


def _bad_request(request: Request, exc: Exception) -> Response:
    return problems_.response(400, str(exc), request.url.path)


def _not_found(request: Request, exc: LookupError) -> Response:
    return problems_.response(404, str(exc.args[0]) if exc.args else "not found", request.url.path)


def _conflict(request: Request, exc: Exception) -> Response:
    return problems_.response(409, str(exc), request.url.path)


def _store_unavailable(request: Request, exc: StoreUnavailable) -> Response:
    return problems_.response(HTTP_503_SERVICE_UNAVAILABLE, f"feature store unavailable: {exc}", request.url.path,
                              headers={"Retry-After": "1"})


def _login_required(request: Request, exc: LoginRequired) -> Response:
    return Redirect(f"/console/login?{urlencode({'next': exc.next_path})}", status_code=303)


def _console_forbidden(request: Request, exc: ConsoleForbidden) -> Response:
    return Template(template_name="refused.html", status_code=403, context={
        "title": "Not allowed", "detail": exc.detail, "operator": None, "nav": [], "current": "", "message": None})


def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problems_.response(HTTP_500_INTERNAL_SERVER_ERROR, "internal error (the service's log has the request id)",
                              request.url.path)


_EXCEPTION_HANDLERS = {
    ValidationException: _validation_error,
    NotFoundException: _http_error,
    HTTPException: _http_error,
    BatchRejected: _events_rejected,
    BatchTooLarge: _bad_request,
    FeastWriteRejected: _bad_request,  # a Feast write that does not fit the view: nothing was written
    ModelError: _bad_request,  # a version that is missing or fails its sha256 check: nothing was switched
    UnknownCampaign: _not_found,
    UnknownModel: _not_found,
    UnknownExperiment: _not_found,  # and an unknown treatment version
    ExperimentRejected: _bad_request,
    ExperimentConflict: _conflict,
    ErasureError: _conflict,  # a feature view the erasure cannot handle: nothing was touched
    StoreUnavailable: _store_unavailable,
    LoginRequired: _login_required,  # a console page without a session: to the login page
    ConsoleForbidden: _console_forbidden,  # a console page or form the session may not use: a 403 page
    Exception: _unexpected,
}


# ---- latency metrics and access log ---------------------------------------------------------------------


ADMIN_TIMEOUT_S = 120.0  # activating a model verifies and loads every file of it: seconds, not milliseconds
_OPERATOR_PATHS = ("/admin/", "/console")  # operators' routes: the admin timeout and no answer's Redis budget
_TIMED_OUT_HEADERS = [(b"content-type", problems_.MEDIA_TYPE.encode()), (b"retry-after", b"1")]


def observe_middleware(access: AccessLogger | None, timeout_s: float,
                       max_body_bytes: int) -> Callable[[ASGIApp], ASGIApp]:
    """Around every routed request: the key check (serving/access.py: 401/403 before the route runs), the request
    timeout (503 + Retry-After when a request takes longer than `timeout_s`), the latency histogram per route and
    status, and the access log line (when enabled)."""
    return lambda app: _observe(app, access, timeout_s, max_body_bytes)


async def _refuse(refusal: Refusal, scope: Scope, receive: Receive, send: Send, max_body_bytes: int) -> None:
    """The 401/403 problem, once the request's body is read (at most `max_body_bytes`): an HTTP/1.1 answer sent
    before the body is read makes the server drop the keep-alive connection, and a client that has already sent its
    next request on it gets a disconnect instead of an answer."""
    if scope["method"] not in ("GET", "HEAD"):
        read = 0
        while read <= max_body_bytes:
            message = await receive()
            read += len(message.get("body", b""))
            if message["type"] != "http.request" or not message.get("more_body"):
                break
    headers = [(b"content-type", problems_.MEDIA_TYPE.encode()),
               *((name.lower().encode(), value.encode()) for name, value in refusal.headers.items())]
    await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
    await send({"type": "http.response.body", "body": problems_.encoded(refusal.status, refusal.detail, scope["path"])})


def _observe(app: ASGIApp, access: AccessLogger | None, timeout_s: float, max_body_bytes: int) -> ASGIApp:

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        start = time.perf_counter()
        rid = request_id.of_scope(scope)
        rid_header = (request_id.HEADER, rid.encode())
        status = [500]
        started = [False]
        timed = scope["path"].startswith("/console")  # its pages show their server time (and tests hold them to it)
        if timed:
            scope["pantry.started"] = start

        async def send_wrapper(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                started[0] = True
                headers = [*message.get("headers", []), rid_header]
                if timed:
                    headers.append((b"server-timing", f"app;dur={(time.perf_counter() - start) * 1000:.1f}".encode()))
                message = {**message, "headers": headers}
            await send(message)

        state = scope["litestar_app"].state
        refusal = authorize(scope, state.route_scopes, state.key_table)  # a 401/403, or None: the route may run
        operator = scope["path"].startswith(_OPERATOR_PATHS)
        # the request's Redis time budget (serving/redis_guard.py) is for answers; an operator's page or action may
        # read more (a KPI report, a model switch) and is bounded by the admin timeout and each call's socket timeout
        budget = None if operator or refusal else begin_request()
        try:
            async with asyncio.timeout(ADMIN_TIMEOUT_S if operator else timeout_s):
                if refusal is None:
                    await app(scope, receive, send_wrapper)
                else:
                    await _refuse(refusal, scope, receive, send_wrapper, max_body_bytes)
        except TimeoutError:
            if started[0]:
                raise  # the answer is already on its way: nothing sensible to add
            status[0] = 503
            await send({"type": "http.response.start", "status": 503, "headers": [*_TIMED_OUT_HEADERS, rid_header]})
            await send({"type": "http.response.body",
                        "body": problems_.encoded(503, "request timed out", scope["path"])})
        finally:
            if budget is not None:
                end_request(budget)
            seconds = time.perf_counter() - start
            # the template, never the raw path: an unmatched path could carry anything
            route = scope.get("path_template") or ("unmatched" if status[0] == 404 else "other")
            metrics.PENDING.observe(metrics.child(metrics.REQUEST_LATENCY, route, str(status[0])), seconds)
            if route.startswith("/v1/"):  # the console overview's last hour (a dict increment, no I/O)
                traffic.RECORDER.request(route, status[0], seconds)
            if access is not None:
                access(scope["method"], route, status[0], seconds, key_id(scope), rid)

    return middleware


# ---- the app -------------------------------------------------------------------------------------------------


_SECURITY_SCHEMES = Components(security_schemes={
    "apiKey": SecurityScheme(type="apiKey", name="X-API-Key", security_scheme_in="header"),
    "bearer": SecurityScheme(type="http", scheme="bearer", description="the same API key as a bearer token"),
})


def _services(state: State) -> Services:
    """What handlers get as `services`: the worker's Services, built at startup."""
    return state.services


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        services = await Services.start(settings)
        app.state.services = services
        # the guardrail loop needs the experiment service, which needs Services: started here, stopped with them
        services.tasks.append(asyncio.create_task(experiment_guard.run(services), name="guardrails"))
        # the console's traffic history: this worker's per-minute counts into Redis (serving/console/traffic.py)
        services.traffic = traffic.RECORDER
        services.tasks.append(asyncio.create_task(
            traffic.RECORDER.run(services.store, services.pipeline, settings.console_traffic_flush_s),
            name="console-traffic"))
        # what startup built (models, campaigns, popularity, the registry) lives as long as the worker: move it out
        # of the collector's generations so a full collection does not rescan it in the middle of a request
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await services.stop()

    app = Litestar(
        route_handlers=[
            HealthController,
            RecommendationsController,
            SubstitutionsController,
            NextBestActionController,
            FeaturesController,
            FeastServerController,
            EventsController,
            PreferencesController,
            ClockController,
            AdminCampaignsController,
            AdminModelsController,
            AdminExperimentsController,
            AdminAuditController,
            AdminCustomersController,
            AdminKpisController,
            AdminDriftController,
            *console.ROUTES,
        ],
        template_config=console.TEMPLATES,
        lifespan=[lifespan],
        dependencies={"services": Provide(_services, sync_to_thread=False)},
        exception_handlers=_EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        before_request=enforce_limits,
        # every route: its request timeout, metrics and access log, and the key check (the scope its path needs)
        middleware=[observe_middleware(access_logger(settings), settings.request_timeout_s, settings.max_body_bytes)],
        cors_config=CORSConfig(allow_origins=list(settings.cors_origins)) if settings.cors_origins else None,
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(title="pantry", version="1.0.0", path="/schema",
                                     render_plugins=[SwaggerRenderPlugin()], components=_SECURITY_SCHEMES,
                                     security=[{"apiKey": []}, {"bearer": []}]),
        state=State({"settings": settings}),
        debug=False,
    )
    app.state.key_table = load_keys(settings)
    app.state.route_scopes = check_routes(app, settings)  # an unmapped /v1/ or /admin/ route stops here
    problems_.declare(app, app.state.route_scopes)  # before the schema is first built (on its first request)
    return app


def create_app_from_env() -> Litestar:
    """The factory granian workers call (settings from the environment)."""
    request_id.configure_logging()
    return create_app(get_settings())
