"""Who is using the console: a login with an API key opens a session (a random token in an HttpOnly, SameSite=Strict
cookie; the session itself in Redis under the token's sha256, so any serving worker knows it and a Redis dump holds
no usable token), with the key's id and scopes and a CSRF token. Pages and actions need a role (`console_guard`);
every form carries the session's CSRF token and a POST without it is refused (synchronizer-token pattern). The login
form, before any session, is protected by a double-submit cookie.

The key is checked against the same key table as the API (serving/access.py); a key removed from the table ends its
console sessions at the next request (the scopes are re-read from the table, never trusted from the session).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Final

import msgspec
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from pantry.apikeys import ApiKey, KeyTable
from pantry.keys import CONSOLE_SESSION_PREFIX

SESSION_COOKIE: Final = "pantry_console"
LOGIN_CSRF_COOKIE: Final = "pantry_console_login"
CSRF_FIELD: Final = "csrf_token"
TOKEN_CHARS: Final = 43  # secrets.token_urlsafe(32)


class ConsoleSession(msgspec.Struct, frozen=True):
    key_id: str
    csrf: str
    created: float


class LoginRequired(Exception):
    """No session, or an expired one: the handler (serving/app.py) redirects to the login page."""

    def __init__(self, next_path: str) -> None:
        super().__init__("login required")
        self.next_path = next_path


class ConsoleForbidden(Exception):
    """The session's key lacks the page's role, or a form came without the session's CSRF token: a 403 page."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(ConsoleSession).decode


def _redis_key(token: str) -> str:
    return CONSOLE_SESSION_PREFIX + hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def same(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(a.encode(), b.encode())  # type: ignore[union-attr]


async def open_session(redis, principal: ApiKey, ttl_s: float) -> tuple[str, ConsoleSession]:
    """A new session for `principal`: (the cookie's token, the session)."""
    token = new_token()
    session = ConsoleSession(principal.key_id, new_token(), time.time())
    await redis.set(_redis_key(token), _encode(session), px=int(ttl_s * 1000))
    return token, session


async def close_session(redis, token: str | None) -> None:
    if token and len(token) == TOKEN_CHARS:
        await redis.delete(_redis_key(token))


async def read_session(redis, token: str | None) -> ConsoleSession | None:
    if not token or len(token) != TOKEN_CHARS:
        return None
    raw = await redis.get(_redis_key(token))
    return _decode(raw) if raw else None


class Operator(msgspec.Struct, frozen=True):
    """The request's console user: the session and the key's current scopes (from the key table)."""

    session: ConsoleSession
    principal: ApiKey

    @property
    def key_id(self) -> str:
        return self.principal.key_id

    @property
    def csrf(self) -> str:
        return self.session.csrf

    def may(self, role: str) -> bool:
        return self.principal.has(role)


async def operator_of(connection: ASGIConnection) -> Operator | None:
    """The logged-in operator of this request (cached in the scope), or None."""
    if "console_operator" in connection.scope:
        return connection.scope["console_operator"]
    services = connection.app.state.services
    session = await services.store.call(
        lambda: read_session(services.redis, connection.cookies.get(SESSION_COOKIE)))
    operator = None
    if session is not None:
        table: KeyTable = connection.app.state.key_table
        principal = table.by_id(session.key_id)
        if principal is not None:
            operator = Operator(session, principal)
            connection.scope["auth"] = principal  # the access log and the audit log name the key id
    connection.scope["console_operator"] = operator
    return operator


async def console_guard(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    """A console route's guard: a session (else the login page), the role in the handler's opt["role"] (else 403),
    and on a POST the session's CSRF token in the form (else 403)."""
    operator = await operator_of(connection)
    if operator is None:
        raise LoginRequired(connection.scope["path"])
    role = handler.opt.get("role")
    if role and not operator.may(role):
        raise ConsoleForbidden(f"this page needs the `{role}` role; key `{operator.key_id}` has "
                               f"{', '.join(sorted(operator.principal.scopes))}")
    if connection.scope["method"] == "POST":
        form = await Request(connection.scope, connection.receive).form() if not isinstance(connection, Request) \
            else await connection.form()
        if not same(form.get(CSRF_FIELD), operator.csrf):
            raise ConsoleForbidden("this form was sent without a valid CSRF token: reload the page and try again")
