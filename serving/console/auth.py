"""Log in with an API key (any configured key: what it may see is decided per page by its role) and log out. Both
are audited. The login form is CSRF-protected by a double-submit cookie (there is no session yet to hold a token)."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, Request, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Redirect, Template

from pantry import audit
from serving import audit_log
from serving.console.session import (
    CSRF_FIELD,
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    close_session,
    console_guard,
    new_token,
    open_session,
    operator_of,
    same,
)
from serving.services import Injected


class LoginForm(msgspec.Struct):
    api_key: Annotated[str, msgspec.Meta(max_length=200)] = ""
    csrf_token: Annotated[str, msgspec.Meta(max_length=100)] = ""
    next: Annotated[str, msgspec.Meta(max_length=200)] = "/console"


def _safe_next(path: str) -> str:
    """Only a console path: never an open redirect to another site."""
    return path if path.startswith("/console") and "//" not in path and "\\" not in path else "/console"


def _login_page(request: Request, error: str | None, next_path: str, status_code: int = 200) -> Template:
    token = new_token()
    page = Template(template_name="login.html", status_code=status_code, context={
        "title": "Log in", "error": error, "next": _safe_next(next_path), "csrf_field": CSRF_FIELD, "csrf": token,
        "operator": None, "nav": [], "current": "/console/login", "message": None})
    page.set_cookie(LOGIN_CSRF_COOKIE, token, path="/console/login", httponly=True, samesite="strict",
                    secure=request.app.state.settings.console_cookie_secure)
    return page


class ConsoleAuthController(Controller):
    path = "/console"
    include_in_schema = False

    @get("/login")
    async def login_page(self, request: Request, next: str = "/console") -> Template | Redirect:
        if await operator_of(request) is not None:
            return Redirect(_safe_next(next), status_code=303)
        return _login_page(request, None, next)

    @post("/login", status_code=303)
    async def login(self, request: Request, services: Injected, data: Annotated[
            LoginForm, Body(media_type=RequestEncodingType.URL_ENCODED)]) -> Template | Redirect:
        if not same(data.csrf_token, request.cookies.get(LOGIN_CSRF_COOKIE)):
            return _login_page(request, "The form expired or came from elsewhere: please log in again.", data.next,
                               status_code=403)
        principal = request.app.state.key_table.lookup(data.api_key.strip())
        if principal is None:
            return _login_page(request, "Unknown API key.", data.next, status_code=401)
        ttl_s = services.settings.console_session_ttl_s
        token, _ = await services.store.call(lambda: open_session(services.redis, principal, ttl_s))
        await audit_log.record(services, audit.entry(principal.key_id, "console.login", f"key:{principal.key_id}"))
        redirect = Redirect(_safe_next(data.next), status_code=303)
        redirect.set_cookie(SESSION_COOKIE, token, path="/console", httponly=True, samesite="strict",
                            max_age=int(ttl_s), secure=services.settings.console_cookie_secure)
        redirect.delete_cookie(LOGIN_CSRF_COOKIE, path="/console/login")
        return redirect

    @post("/logout", status_code=303, guards=[console_guard])
    async def logout(self, request: Request, services: Injected) -> Redirect:
        operator = await operator_of(request)
        await services.store.call(lambda: close_session(services.redis, request.cookies.get(SESSION_COOKIE)))
        if operator is not None:
            await audit_log.record(services, audit.entry(operator.key_id, "console.logout", f"key:{operator.key_id}"))
        redirect = Redirect("/console/login", status_code=303)
        redirect.delete_cookie(SESSION_COOKIE, path="/console")
        return redirect
