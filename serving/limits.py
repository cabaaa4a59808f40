"""Per-request limits that run before any handler: JSON content type (415) and the rate limit (429).

The rate limit counts per API key (else per client address) per minute in Redis, so every worker shares one
counter; 0 = unlimited. If Redis cannot be reached the limit fails open: availability over strictness.
"""

from __future__ import annotations

import time

from litestar import MediaType, Request, Response

from serving.redis_guard import StoreUnavailable

_RATE_KEY = "pantry:ratelimit:{who}:{minute}"


async def enforce_limits(request: Request) -> Response | None:
    if request.method in ("POST", "PUT", "PATCH"):
        content_type = request.headers.get("content-type")
        if content_type and not content_type.split(";", 1)[0].strip().lower().endswith(("/json", "+json")):
            return Response({"status_code": 415, "detail": f"Content-Type must be application/json, got "
                             f"{content_type!r}"}, status_code=415, media_type=MediaType.JSON)
    svc = getattr(request.app.state, "services", None)
    if svc is None:
        return None
    limit = svc.settings.rate_limit_per_minute
    if limit <= 0 or request.url.path in ("/healthz", "/readyz", "/metrics"):
        return None
    who = request.headers.get("x-api-key") or (request.client.host if request.client else "unknown")
    now = time.time()
    minute = int(now // 60)
    key = _RATE_KEY.format(who=who, minute=minute)

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
        return Response({"status_code": 429, "detail": f"rate limit of {limit} requests per minute exceeded"},
                        status_code=429, headers={"Retry-After": str(retry_after)}, media_type=MediaType.JSON)
    return None
