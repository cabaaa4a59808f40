"""/admin/experiments (ml_engineer): create, list, report, promote, stop. Keys and scopes are checked by the app-level
guard (serving/access.py); what the actions do is in serving/experiments.py, each audited with the key id as actor."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.params import FromPath, JSONBody, Parameter

from serving import experiments
from serving.access import actor
from serving.experiments import CreateExperiment, EndRequest, ExperimentReport
from serving.services import Injected

ExperimentId = Annotated[str, Parameter(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]


class AdminExperimentsController(Controller):
    path = "/admin/experiments"
    tags = ("admin",)

    @post(status_code=201, summary="Start an experiment: a treatment version against the ACTIVE one on a share")
    async def create(self, data: JSONBody[CreateExperiment], request: Request, services: Injected) -> dict[str, Any]:
        return await experiments.create(services, data, actor(request))

    @get(summary="Every experiment (running and ended within the retention), newest first")
    async def list_experiments(self, services: Injected) -> list[dict[str, Any]]:
        return await experiments.listing(services)

    @get("/{experiment_id:str}", summary="One experiment with per-arm KPIs, 95% intervals and p-values")
    async def report(self, experiment_id: FromPath[ExperimentId], services: Injected) -> ExperimentReport:
        return await experiments.report(services, experiment_id)

    @post("/{experiment_id:str}/promote", status_code=200, summary="Make the treatment ACTIVE and end the experiment")
    async def promote(self, experiment_id: FromPath[ExperimentId], request: Request, services: Injected,
                      data: JSONBody[EndRequest | None] = None) -> dict[str, Any]:
        return await experiments.promote(services, experiment_id, actor(request), data.note if data else None)

    @post("/{experiment_id:str}/stop", status_code=200, summary="End the experiment: everyone back on the control")
    async def stop(self, experiment_id: FromPath[ExperimentId], request: Request, services: Injected,
                   data: JSONBody[EndRequest | None] = None) -> dict[str, Any]:
        return await experiments.stop(services, experiment_id, actor(request), data.note if data else None)
