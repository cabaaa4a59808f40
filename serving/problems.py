"""Every error as an RFC 9457 problem detail (`application/problem+json`), one shape on every endpoint:

    {"type": "about:blank", "title": "Bad Request", "status": 400, "detail": "what is wrong", "instance": "/v1/events",
     "errors": [{"index": 3, "reason": "..."}]}

`title` is the status's phrase (the `about:blank` type says the status is the whole classification); `detail` says
what is wrong in words a client developer can act on; `instance` is the request's path. Extensions, only where they
apply: `errors` (each invalid event of a rejected batch, by index) and `extra` (each invalid field of a body). The
exception handlers in serving/app.py, the limits (serving/limits.py) and the request timeout all answer with this.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import msgspec
from litestar import Response

from pantry.schemas import Problem

MEDIA_TYPE = "application/problem+json"


def of(status: int, detail: str, instance: str | None = None, **extensions: Any) -> Problem:
    return Problem(status=status, title=HTTPStatus(status).phrase, detail=detail, instance=instance, **extensions)


def response(status: int, detail: str, instance: str | None = None, headers: dict[str, str] | None = None,
             **extensions: Any) -> Response:
    return Response(of(status, detail, instance, **extensions), status_code=status, headers=headers,
                    media_type=MEDIA_TYPE)


def encoded(status: int, detail: str, instance: str | None = None) -> bytes:
    """The body, for answers sent below Litestar (the request timeout in serving/app.py)."""
    return msgspec.json.encode(of(status, detail, instance))


_STATUSES = {
    400: "invalid input: `detail` names the field and the rule",
    401: "no API key, or an unknown one",
    403: "the key lacks the route's scope: `detail` names it",
    413: "the body is larger than the service accepts",
    415: "the body is not JSON",
    429: "the key's rate limit is used up (Retry-After)",
    503: "a dependency is down or the request timed out (Retry-After)",
}


def declare(app, route_scopes: dict[str, str | None]) -> None:
    """Every keyed route's error answers (this shape) and its security (the API key, as a header or a bearer token)
    in the OpenAPI schema, so that a generated client knows both and schemathesis checks the errors' shape."""
    from litestar.openapi.datastructures import ResponseSpec

    from serving.access import template_of

    for route in app.routes:
        needed = route_scopes.get(template_of(route.path))
        for handler in getattr(route, "route_handlers", []):
            if route.path.startswith("/console") or needed is None or set(handler.http_methods) == {"OPTIONS"}:
                continue
            declared = dict(handler.responses or {})
            for status, description in _STATUSES.items():
                declared.setdefault(status, ResponseSpec(Problem, description=description, media_type=MEDIA_TYPE))
            handler.responses = declared
            handler.security = [{"apiKey": []}, {"bearer": []}]
