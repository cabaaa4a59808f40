"""GET /admin/kpis (ml_engineer): the online KPIs the live flow counts (serving/kpis.py)."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get
from litestar.params import Parameter

from serving import kpis
from serving.kpis import KpiReport
from serving.services import Injected

_DAY = Parameter(pattern=r"^\d{4}-\d{2}-\d{2}$", description="YYYY-MM-DD, inclusive (the decision's event-time day)")
_NAME = Parameter(max_length=128)


class AdminKpisController(Controller):
    path = "/admin/kpis"
    tags = ("admin",)

    @get(summary="Online KPIs per model, version, experiment arm and surface: counts and rates")
    async def kpis(
        self,
        services: Injected,
        model: Annotated[str | None, _NAME] = None,
        version: Annotated[str | None, _NAME] = None,
        experiment: Annotated[str | None, _NAME] = None,
        surface: Annotated[str | None, _NAME] = None,
        day_from: Annotated[str | None, _DAY] = None,
        day_to: Annotated[str | None, _DAY] = None,
        by_day: Annotated[bool, Parameter(description="one row per day (default: totals over the days)")] = False,
    ) -> KpiReport:
        return await kpis.report(services, model=model, version=version, experiment=experiment, surface=surface,
                                 day_from=day_from, day_to=day_to, by_day=by_day)
