"""API keys and roles for /admin/ (header X-API-Key; keys and roles from settings.api_keys).

No key or an unknown key -> 401; a key without the role -> 403. `admin` has every role. Actions are attributed to
the role and a short hash of the key, never the key itself.
"""

from __future__ import annotations

import hashlib

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from pantry.settings import Role


def key_and_role(connection: ASGIConnection) -> tuple[str, Role]:
    key = connection.headers.get("x-api-key")
    if not key:
        raise NotAuthorizedException(detail="missing X-API-Key header")
    role = connection.app.state.settings.api_keys.get(key)
    if role is None:
        raise NotAuthorizedException(detail="unknown API key")
    return key, role


def requires(role: Role):
    """A route guard: the request's key must have `role` (or be an admin key)."""

    def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        _, has = key_and_role(connection)
        if has not in (role, "admin"):
            raise PermissionDeniedException(detail=f"this action needs the {role} role; the key has {has}")

    return guard


def actor(connection: ASGIConnection) -> str:
    """Who did it, for the records: `role:` and the first 8 hex digits of the key's sha256."""
    key, role = key_and_role(connection)
    return f"{role}:{hashlib.sha256(key.encode()).hexdigest()[:8]}"
