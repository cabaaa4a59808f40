"""Overview (any operator): requests, latency and fallback rate per endpoint over the last hour, and what needs
attention."""

from __future__ import annotations

from litestar import Controller, Request, get
from litestar.response import Template

from serving.console.pages import render
from serving.console.session import console_guard, operator_of
from serving.services import Injected


class ConsoleOverviewController(Controller):
    path = "/console"
    include_in_schema = False
    guards = (console_guard,)

    @get()
    async def page(self, request: Request, services: Injected) -> Template:
        return render(request, await operator_of(request), "overview.html", "Overview")
