"""Decisions (ml_engineer): look up a decision by customer or decision id."""

from __future__ import annotations

from types import MappingProxyType

from litestar import Controller, Request, get
from litestar.response import Template

from serving.console.pages import render
from serving.console.session import console_guard, operator_of
from serving.services import Injected


class ConsoleDecisionsController(Controller):
    path = "/console/decisions"
    include_in_schema = False
    guards = (console_guard,)
    opt = MappingProxyType({"role": "ml_engineer"})

    @get()
    async def page(self, request: Request, services: Injected) -> Template:
        return render(request, await operator_of(request), "decisions.html", "Decisions")
