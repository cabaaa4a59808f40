"""Models and experiments (ml_engineer): versions, activate / roll back; experiments with per-arm KPIs."""

from __future__ import annotations

from types import MappingProxyType

from litestar import Controller, Request, get
from litestar.response import Template

from serving.console.pages import render
from serving.console.session import console_guard, operator_of
from serving.services import Injected


class ConsoleModelsController(Controller):
    path = "/console/models"
    include_in_schema = False
    guards = (console_guard,)
    opt = MappingProxyType({"role": "ml_engineer"})

    @get()
    async def page(self, request: Request, services: Injected) -> Template:
        return render(request, await operator_of(request), "models.html", "Models and experiments")
