"""What /admin/experiments does: create, list, report, promote and stop experiments (pantry/experiments.py), each
recorded in the audit log with the key id as actor. The guardrail loop (serving/experiment_guard.py) ends
experiments through `end` too, so every end is one compare-and-set: a stop and a promote cannot both win."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Annotated, Any

import msgspec

from pantry import audit, experiments, guardrails
from pantry.experiments import Experiment, Guardrails, Status
from pantry.guardrails import ArmReport, Breach, Comparison
from pantry.keys import EXPERIMENTS, EXPERIMENTS_RUNNING
from pantry.kpis import KPI_HASHES, merge_shards
from pantry.models import registry
from pantry.scoring import MODEL_NAMES, ModelError
from serving import audit_log, governance
from serving.services import Services

Version = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.\-]+$")]


class CreateExperiment(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    model: Annotated[str, msgspec.Meta(max_length=40)]
    treatment: Version
    share: float | None = None  # in (0, 1]; or the ramp's first stage
    ramp: Annotated[list[float], msgspec.Meta(max_length=20)] = msgspec.field(default_factory=list)
    guardrails: dict[str, int | float] | None = None  # any Guardrails field; the rest from Settings
    stage_min_decisions: Annotated[int, msgspec.Meta(ge=0, le=100_000_000)] | None = None
    stage_min_seconds: Annotated[float, msgspec.Meta(ge=0.0, le=30 * 86_400.0)] | None = None


class EndRequest(msgspec.Struct, forbid_unknown_fields=True):
    note: Annotated[str, msgspec.Meta(max_length=500)] | None = None


class ExperimentReport(msgspec.Struct):
    experiment_id: str
    experiment: dict[str, Any]
    control: ArmReport
    treatment: ArmReport
    difference: Comparison  # treatment - control
    guardrail: Breach | None  # what the guardrails say about these totals now (None: they hold)
    # while running, in the worker that answered: is the treatment loaded, and why not (its customers then get the
    # control's answer with the model_unavailable fallback)
    treatment_loaded: bool | None = None
    treatment_error: str | None = None


class ExperimentRejected(ValueError):
    """A request that cannot be an experiment (400)."""


class UnknownExperiment(LookupError):
    pass


class ExperimentConflict(RuntimeError):
    """The state does not allow it (409): one already running, or the experiment already ended."""


def view(e: Experiment) -> dict[str, Any]:
    out = msgspec.to_builtins(e)
    out.pop("salt", None)  # how customers are split is nobody's business outside the service
    return {"experiment_id": e.id, **out}


async def _get(svc: Services, experiment_id: str) -> tuple[Experiment, bytes]:
    raw = await svc.store.call(lambda: svc.redis.hget(EXPERIMENTS, experiment_id))
    if raw is None:
        raise UnknownExperiment(f"no experiment {experiment_id!r}")
    return experiments.decode(raw), raw


async def cas(svc: Services, old_raw: bytes, new: Experiment, clear_running: bool) -> bool:
    script, keys = experiments.UPDATE_SCRIPT, (EXPERIMENTS, EXPERIMENTS_RUNNING)
    written = await svc.store.call(lambda: svc.redis.eval(script, 2, *keys, new.id, old_raw, experiments.encode(new),
                                                          new.model if clear_running else ""))
    return bool(written)


async def create(svc: Services, request: CreateExperiment, by: str) -> dict[str, Any]:
    if request.model not in MODEL_NAMES:
        raise governance.UnknownModel(f"no model {request.model!r} (have: {', '.join(MODEL_NAMES)})")
    models_dir = svc.settings.models_dir
    control = registry.active_version(models_dir, request.model)
    if control is None:
        raise ExperimentConflict(f"{request.model} has no ACTIVE version to be the control")
    if request.treatment not in registry.versions(models_dir, request.model):
        raise UnknownExperiment(f"{request.model} has no version {request.treatment!r} (have: "
                                f"{', '.join(registry.versions(models_dir, request.model))})")
    if request.treatment == control:
        raise ExperimentRejected(f"treatment {request.treatment} is the ACTIVE version (the control): nothing to "
                                 "compare")
    problem = experiments.check_ramp(request.share, request.ramp)
    if problem:
        raise ExperimentRejected(problem)
    try:
        limits = msgspec.convert({**msgspec.to_builtins(experiments.default_guardrails(svc.settings)),
                                  **(request.guardrails or {})}, Guardrails)
    except msgspec.ValidationError as exc:
        raise ExperimentRejected(f"guardrails: {exc}") from exc
    await asyncio.to_thread(registry.verify, models_dir / request.model / request.treatment)  # ModelError -> 400
    s = svc.settings
    exp = experiments.new_experiment(
        model=request.model, control=control, treatment=request.treatment, share=request.share or 0.0,
        ramp=request.ramp, guardrails=limits, by=by,
        stage_min_decisions=s.experiment_stage_min_decisions if request.stage_min_decisions is None
        else request.stage_min_decisions,
        stage_min_seconds=s.experiment_stage_min_s if request.stage_min_seconds is None else request.stage_min_seconds)
    keys = (EXPERIMENTS, EXPERIMENTS_RUNNING)
    current = await svc.store.call(lambda: svc.redis.eval(experiments.CREATE_SCRIPT, 2, *keys, exp.id, exp.model,
                                                          experiments.encode(exp)))
    if current is not None:
        other = current.decode() if isinstance(current, bytes) else current
        raise ExperimentConflict(f"experiment {other} is already running for {request.model}: stop or promote it "
                                 "first")
    await audit_log.record(svc, audit.entry(by, "experiment.create", f"experiment:{exp.id}", after=view(exp)))
    return view(exp)


async def records(svc: Services) -> list[Experiment]:
    """Every experiment kept (running, and ended within the retention)."""
    return experiments.decode_all(await svc.store.call(lambda: svc.redis.hgetall(EXPERIMENTS)))


async def listing(svc: Services) -> list[dict[str, Any]]:
    return [view(e) for e in await records(svc)]


async def kpi_totals(svc: Services, experiment_ids: Collection[str] | None = None):
    """Every KPI key's totals (or only those of `experiment_ids`), summed over the outcome shards (pantry/kpis.py).

    For given experiments, Redis picks their fields (HSCAN MATCH on the experiment part of the field): the guardrail
    loop reads them every second on a worker that is answering too, and the whole hashes (every key of every day kept)
    were ~210 KB to parse on the bench's state, ~2-3 ms of the worker's event loop each time (docs/DECISIONS.md
    "Live batches linger")."""
    if experiment_ids is None:
        async def read_all():
            pipe = svc.redis.pipeline(transaction=False)
            for name in KPI_HASHES:
                pipe.hgetall(name)
            return await pipe.execute()

        return merge_shards(await svc.store.call(read_all), None)
    scans = [(name, f"*|{_glob_escape(experiment_id)}|*") for name in KPI_HASHES for experiment_id in experiment_ids]

    async def read_matching():
        found: list[dict] = []
        pending = [(name, pattern, 0) for name, pattern in scans]
        while pending:  # one round trip per pass; a hash small enough to be one listpack answers in the first
            pipe = svc.redis.pipeline(transaction=False)
            for name, pattern, cursor in pending:
                pipe.hscan(name, cursor, match=pattern, count=KPI_SCAN_COUNT)
            replies = await pipe.execute()
            found.extend(fields for _cursor, fields in replies)
            pending = [(name, pattern, cursor) for (name, pattern, _), (cursor, _fields) in zip(pending, replies,
                                                                                            strict=True) if cursor]
        return found

    return merge_shards(await svc.store.call(read_matching), experiment_ids)


KPI_SCAN_COUNT = 1000  # fields an HSCAN step looks at (a hash's fields: every KPI key of every day kept)


def _glob_escape(text: str) -> str:
    """`text` matched literally in a Redis glob pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


async def report(svc: Services, experiment_id: str) -> ExperimentReport:
    exp, _raw = await _get(svc, experiment_id)
    control, treatment, versions = guardrails.arm_totals(await kpi_totals(svc, {exp.id}), exp.id)
    here = svc.models.running.get(exp.model)
    here = here if here is not None and here.experiment.id == exp.id else None
    return ExperimentReport(exp.id, view(exp), guardrails.arm_report("control", control, versions["control"]),
                            guardrails.arm_report("treatment", treatment, versions["treatment"]),
                            guardrails.compare(control, treatment), guardrails.check(exp, control, treatment),
                            here.treatment is not None if here else None, here.error if here else None)


async def end(svc: Services, exp: Experiment, raw: bytes, status: Status, reason: str, by: str) -> Experiment | None:
    """Running -> `status` (one compare-and-set; None when the record changed meanwhile), audited; this worker stops
    splitting at once."""
    new = experiments.ended(exp, status, reason, by)
    if not await cas(svc, raw, new, clear_running=True):
        return None
    svc.models.end_experiment(exp.model)
    action = "experiment.promote" if status == "promoted" else "experiment.stop"
    await audit_log.record(svc, audit.entry(by, action, f"experiment:{exp.id}", before=view(exp), after=view(new),
                                            note=reason))
    return new


async def _running(svc: Services, experiment_id: str) -> tuple[Experiment, bytes]:
    exp, raw = await _get(svc, experiment_id)
    if not exp.running:
        raise ExperimentConflict(f"experiment {experiment_id} is already {exp.status}"
                                 + (f" ({exp.reason})" if exp.reason else ""))
    return exp, raw


async def stop(svc: Services, experiment_id: str, by: str, note: str | None) -> dict[str, Any]:
    exp, raw = await _running(svc, experiment_id)
    new = await end(svc, exp, raw, "stopped", note or f"stopped by {by}", by)
    if new is None:
        raise ExperimentConflict(f"experiment {experiment_id} changed meanwhile (a guardrail?): read it again")
    return view(new)


async def promote(svc: Services, experiment_id: str, by: str, note: str | None) -> dict[str, Any]:
    """End the split, then make the treatment ACTIVE through the registry (governance.activate_model, which audits
    the switch too). A treatment that fails its checks then: the experiment is recorded as stopped, and 400."""
    exp, raw = await _running(svc, experiment_id)
    new = await end(svc, exp, raw, "promoted", note or f"promoted by {by}", by)
    if new is None:
        raise ExperimentConflict(f"experiment {experiment_id} changed meanwhile (a guardrail?): read it again")
    try:
        await governance.activate_model(svc, exp.model, exp.treatment, by)
    except ModelError as exc:
        failed = msgspec.structs.replace(new, status="stopped", reason=f"promotion failed: {exc}")
        await cas(svc, experiments.encode(new), failed, clear_running=False)
        raise
    return view(new)
