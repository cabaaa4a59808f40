"""Per-request limits that run before any handler (after the key check, serving/access.py): JSON content type
(415; the console's HTML forms post form data) and the rate limit (429).

The rate limit counts per validated key id (serving/access.py put it in `scope["auth"]`), or per client address on
the open routes other than health, readiness and metrics, per minute in Redis (`INCR` of one key per id and minute),
so every worker shares one counter; 0 = unlimited. A request with a missing or unknown key never gets here (401 from
the key check), so random keys create no counter. The Redis key holds the key *id*, never the key. If Redis cannot be
reached the limit fails open: availability over strictness. Why not Litestar's RateLimitMiddleware:
docs/DECISIONS.md ("Rate limits").
"""

from __future__ import annotations

import time

from litestar import Request, Response

from serving import problems
from serving.access import key_id
from serving.redis_guard import StoreUnavailable

_RATE_KEY = "pantry:ratelimit:{who}:{minute}"
_UNLIMITED_PATHS = ("/healthz", "/readyz", "/metrics")
_FORM_PATHS = ("/console/",)


def rate_identity(request: Request) -> str:
    """`key:<id>` for an authenticated request, else `addr:<client address>`."""
    kid = key_id(request.scope)
    if kid is not None:
        return f"key:{kid}"
    return f"addr:{request.client.host if request.client else 'unknown'}"


async def enforce_limits(request: Request) -> Response | None:
    if request.method in ("POST", "PUT", "PATCH") and not request.url.path.startswith(_FORM_PATHS):
        content_type = request.headers.get("content-type")
        if content_type and not content_type.split(";", 1)[0].strip().lower().endswith(("/json", "+json")):
            return problems.response(415, f"Content-Type must be application/json, got {content_type!r}",
                                     request.url.path)
    svc = getattr(request.app.state, "services", None)
    if svc is None:
        return None
    limit = svc.settings.rate_limit_per_minute
    if limit <= 0 or request.url.path in _UNLIMITED_PATHS:
        return None
    now = time.time()
    key = _RATE_KEY.format(who=rate_identity(request), minute=int(now // 60))

    async def count() -> int:
        pipe = svc.redis.pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, 61)
        return (await pipe.execute())[0]

    try:
        used = await svc.store.call(count)
    except StoreUnavailable:
        return None
    if used > limit:
        retry_after = max(1, int(60 - now % 60))
        return problems.response(429, f"rate limit of {limit} requests per minute exceeded", request.url.path,
                                 headers={"Retry-After": str(retry_after)})
    return None
