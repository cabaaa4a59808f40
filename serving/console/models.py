"""Models and experiments (ml_engineer): every version with its training figures and online KPIs, activate / roll back;
experiments with per-arm KPIs, 95% intervals and guardrail state; start / promote / stop. Actions call the same
functions as /admin/models and /admin/experiments (so they are audited the same way); a refused action re-renders the
page with the reason and the API's status (400 / 404 / 409)."""

from __future__ import annotations

from types import MappingProxyType
from typing import Annotated

import msgspec
from litestar import Controller, Request, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Redirect, Template

from pantry.scoring import MODEL_NAMES, ModelError
from serving import experiments, governance
from serving.console.model_status import gather
from serving.console.pages import after_action, render
from serving.console.session import console_guard, operator_of
from serving.experiments import CreateExperiment, ExperimentConflict, ExperimentRejected, UnknownExperiment
from serving.services import Injected, Services

_REFUSED = ((ExperimentRejected, 400), (ModelError, 400), (msgspec.ValidationError, 400),
            (governance.UnknownModel, 404), (UnknownExperiment, 404), (ExperimentConflict, 409))
Form = Body(media_type=RequestEncodingType.URL_ENCODED)


class ActivateForm(msgspec.Struct):
    csrf_token: str = ""
    version: Annotated[str, msgspec.Meta(max_length=100)] = ""


class NoteForm(msgspec.Struct):
    csrf_token: str = ""
    note: Annotated[str, msgspec.Meta(max_length=500)] = ""


class StartForm(msgspec.Struct):
    csrf_token: str = ""
    model: Annotated[str, msgspec.Meta(max_length=40)] = ""
    treatment: Annotated[str, msgspec.Meta(max_length=100)] = ""
    share: Annotated[str, msgspec.Meta(max_length=20)] = ""
    ramp: Annotated[str, msgspec.Meta(max_length=200)] = ""  # "0.01, 0.05, 0.25, 1"


def _fraction(text: str, what: str) -> float:
    try:
        return float(text.strip().rstrip("%")) / (100.0 if text.strip().endswith("%") else 1.0)
    except ValueError:
        raise ExperimentRejected(f"{what}: {text!r} is not a number (e.g. 0.1 or 10%)") from None


def start_request(form: StartForm) -> CreateExperiment:
    """The form as the API's CreateExperiment (same validation as POST /admin/experiments)."""
    ramp = [_fraction(x, "ramp") for x in form.ramp.replace(";", ",").split(",") if x.strip()]
    share = _fraction(form.share, "share") if form.share.strip() else None
    if share is None and not ramp:
        raise ExperimentRejected("give a share (e.g. 0.1) or a ramp (e.g. 0.01, 0.05, 0.25, 1)")
    return msgspec.convert({"model": form.model, "treatment": form.treatment, "share": share, "ramp": ramp},
                           CreateExperiment)


class ConsoleModelsController(Controller):
    path = "/console/models"
    include_in_schema = False
    guards = (console_guard,)
    opt = MappingProxyType({"role": "ml_engineer"})

    async def _page(self, request: Request, services: Services, error: str | None = None,
                    status_code: int = 200) -> Template:
        models, exps = await gather(services)
        page = render(request, await operator_of(request), "models.html", "Models and experiments", models=models,
                      experiments=exps, model_names=MODEL_NAMES, error=error)
        page.status_code = status_code
        return page

    async def _act(self, request: Request, services: Services, action, done: str, target: str) -> Template | Redirect:
        try:
            await action()
        except tuple(kind for kind, _ in _REFUSED) as exc:
            status = next(code for kind, code in _REFUSED if isinstance(exc, kind))
            return await self._page(request, services, str(exc), status)
        return after_action(self.path, done, target)

    @get()
    async def page(self, request: Request, services: Injected) -> Template:
        return await self._page(request, services)

    @post("/{name:str}/activate", status_code=303)
    async def activate(self, name: str, request: Request, services: Injected,
                       data: Annotated[ActivateForm, Form]) -> Template | Redirect:
        by = (await operator_of(request)).key_id
        return await self._act(request, services, lambda: governance.activate_model(services, name, data.version, by),
                               "activated", f"{name} {data.version}")

    @post("/{name:str}/rollback", status_code=303)
    async def rollback(self, name: str, request: Request, services: Injected,
                       data: Annotated[NoteForm, Form]) -> Template | Redirect:
        by = (await operator_of(request)).key_id
        return await self._act(request, services, lambda: governance.rollback_model(services, name, by),
                               "rolled_back", name)

    @post("/experiments", status_code=303)
    async def start(self, request: Request, services: Injected,
                    data: Annotated[StartForm, Form]) -> Template | Redirect:
        by = (await operator_of(request)).key_id
        started: dict = {}

        async def create() -> None:
            started.update(await experiments.create(services, start_request(data), by))

        answer = await self._act(request, services, create, "experiment_started", "")
        if isinstance(answer, Redirect):
            return after_action(self.path, "experiment_started", started["experiment_id"])
        return answer

    @post("/experiments/{experiment_id:str}/promote", status_code=303)
    async def promote(self, experiment_id: str, request: Request, services: Injected,
                      data: Annotated[NoteForm, Form]) -> Template | Redirect:
        by = (await operator_of(request)).key_id
        return await self._act(request, services,
                               lambda: experiments.promote(services, experiment_id[:64], by, data.note or None),
                               "experiment_promoted", experiment_id[:64])

    @post("/experiments/{experiment_id:str}/stop", status_code=303)
    async def stop(self, experiment_id: str, request: Request, services: Injected,
                   data: Annotated[NoteForm, Form]) -> Template | Redirect:
        by = (await operator_of(request)).key_id
        return await self._act(request, services,
                               lambda: experiments.stop(services, experiment_id[:64], by, data.note or None),
                               "experiment_stopped", experiment_id[:64])
