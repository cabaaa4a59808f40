"""Features and stream (ml_engineer): per feature view, how old its online rows are (serving/console/freshness.py)
and how its features drift in live decisions against training (the /admin/drift report, serving/drift.py); the live
flow's lag, throughput, counters and latest dead letters (serving/console/stream_status.py).

The three sections are read concurrently; a section whose Redis does not answer says so ("Redis unreachable") and
the page itself still renders."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from types import MappingProxyType
from typing import Any, TypeVar

import msgspec
import redis
from litestar import Controller, Request, get
from litestar.datastructures import State
from litestar.response import Template

from pantry.drift import SCORE_FEATURES, Status
from pantry.drift_report import DriftReport
from serving.console import freshness, stream_status
from serving.console.pages import render
from serving.console.session import console_guard, operator_of
from serving.redis_guard import StoreUnavailable
from serving.service_clock import read_clock
from serving.services import Injected, Services

T = TypeVar("T")
_RANK: dict[str, int] = {"stable": 0, "insufficient": 1, "moderate": 2, "significant": 3}
STATUS_CLASS = {"stable": "ok", "insufficient": "", "moderate": "warn", "significant": "bad"}


class DriftRow(msgspec.Struct, frozen=True):
    model: str
    version: str
    active: bool
    view: str  # "model scores" for score.top / score.mean
    feature: str
    psi: float | None
    status: Status
    live_count: int


class ViewDrift(msgspec.Struct, frozen=True):
    worst: Status | None  # over the ACTIVE versions' features of this view (None: no model reads it)
    models: list[str]


class Section(msgspec.Struct):
    """One part of the page: its data, or why it could not be read."""

    data: Any = None
    unavailable: str | None = None


def drift_rows(report: DriftReport) -> list[DriftRow]:
    """The report's features, each under its view (drift features are named `view.field`; scores are the model's)."""
    rows = []
    for m in report.models:
        for f in m.features:
            view, _, field = f.feature.partition(".")
            if f.feature in SCORE_FEATURES:
                view, field = "model scores", f.feature
            rows.append(DriftRow(m.model, m.version, m.active, view, field, f.psi, f.status, f.live_count))
    return rows


def by_view(rows: list[DriftRow]) -> dict[str, ViewDrift]:
    out: dict[str, ViewDrift] = {}
    for view in {r.view for r in rows}:
        active = [r for r in rows if r.view == view and r.active]
        worst = max((r.status for r in active), key=_RANK.__getitem__, default=None)
        out[view] = ViewDrift(worst, sorted({r.model for r in active}))
    return out


def human_age(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * 86_400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.1f} d"


async def _section(read: Callable[[], Awaitable[T]]) -> Section:
    """One section's reads, in a task of its own outside the request's Redis time budget (a fresh context): like
    /admin/drift, an operator page reads more than an answer's 60 ms allow (thousands of HMGETs for freshness); the
    socket timeouts and freshness.READ_TIMEOUT_S still bound the wait on a hung Redis."""
    try:
        return Section(await asyncio.get_running_loop().create_task(read(), context=contextvars.Context()))
    except StoreUnavailable as exc:
        return Section(unavailable=f"Redis unreachable: {exc}")
    except (OSError, redis.ConnectionError, redis.TimeoutError) as exc:  # the drift report reads unguarded
        return Section(unavailable=f"Redis unreachable: {type(exc).__name__}: {exc}")
    except redis.RedisError as exc:  # e.g. EVAL or SCAN refused by a managed Redis's ACL
        return Section(unavailable=f"Redis refused a read: {type(exc).__name__}: {exc}")


class PageMemory:
    """What this worker keeps between views of the page: the key sample and the heartbeat readings."""

    def __init__(self) -> None:
        self.sample: freshness.KeySample | None = None
        self.meter = stream_status.ThroughputMeter()

    def sample_for(self, svc: Services) -> freshness.KeySample | None:
        reader = svc.reader
        if reader is None:
            return None
        if self.sample is None or self.sample.layout is not reader.layout:
            self.sample = freshness.KeySample(reader.layout)
        return self.sample


def _memory(state: State) -> PageMemory:
    memory = getattr(state, "console_features", None)
    if memory is None:
        memory = PageMemory()
        state.console_features = memory
    return memory


async def _freshness(svc: Services, memory: PageMemory) -> freshness.Freshness | None:
    sample = memory.sample_for(svc)
    if sample is None:
        return None  # no Feast registry yet: the template says so
    now = (await read_clock(svc, last_known=True)).now
    return await freshness.read(svc, sample, now)


async def _drift(svc: Services) -> DriftReport:
    sampler = svc.drift
    if sampler is None:
        raise StoreUnavailable("drift sampler not started")
    return await svc.store.call(lambda: sampler.report(svc.models.current.versions()))


class ConsoleFeaturesController(Controller):
    path = "/console/features"
    include_in_schema = False
    guards = (console_guard,)
    opt = MappingProxyType({"role": "ml_engineer"})

    @get()
    async def page(self, request: Request, services: Injected) -> Template:
        memory = _memory(request.app.state)
        fresh, stream, drift = await asyncio.gather(
            _section(lambda: _freshness(services, memory)),
            _section(lambda: stream_status.read(services, memory.meter)),
            _section(lambda: _drift(services)))
        rows = drift_rows(drift.data) if drift.data is not None else []
        others = [m for m in drift.data.models if not m.active] if drift.data is not None else []
        return render(request, await operator_of(request), "features.html", "Features and stream",
                      fresh=fresh, stream=stream, drift=drift, view_drift=by_view(rows),
                      drift_rows=sorted((r for r in rows if r.active), key=lambda r: (r.view, r.feature, r.model)),
                      other_versions=others,
                      status_class=STATUS_CLASS, age=human_age, sample_keys=freshness.SAMPLE_KEYS,
                      sample_max_age_s=services.settings.console_sample_max_age_s,
                      dead_shown=stream_status.DEAD_LETTERS_SHOWN)
