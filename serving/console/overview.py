"""Overview (any operator): requests, latency and fallback rate per /v1/ endpoint over the last hour as small charts
(serving/console/traffic.py's per-minute history), and what needs attention: pending campaign approvals, running
experiments and those a guardrail stopped, a stopped or lagging live flow (the streaming feature views then go
stale), 5xx answers. Each item links to the page where it is handled, and an operator sees only the items of the
pages their role may open. Nothing here names a customer.

The reads run concurrently (the traffic's 60 minute hashes are one round trip); a part Redis does not answer for is
named on the page, never a 500.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Literal, TypeVar

import msgspec
from litestar import Controller, Request, get
from litestar.response import Template
from markupsafe import Markup, escape
from redis.exceptions import ResponseError

from pantry import experiments
from pantry.experiments import Experiment
from pantry.health import LiveFlow, live_flow_async
from pantry.keys import EXPERIMENTS
from pantry.schemas import ServiceClock
from serving.campaigns import status_of
from serving.console import traffic
from serving.console.pages import render
from serving.console.session import Operator, console_guard, operator_of
from serving.console.traffic import RouteHour, TrafficHour
from serving.experiment_guard import GUARD_ACTOR
from serving.redis_guard import StoreUnavailable
from serving.service_clock import read_clock
from serving.services import Injected, Services

T = TypeVar("T")

GUARDRAIL_STOP_RECENT_S: Final = 24 * 3600.0  # a guardrail stop is news for a day (then the models page has it)
LAG_ATTENTION_S: Final = 60.0  # events waiting longer than this for the live flow: the streaming views are stale
ERRORS_RECENT_MINUTES: Final = 10  # 5xx answers this recent are an item; older ones stay in the charts
ANSWER_ROUTES: Final = tuple(traffic.FALLBACK_ROUTES.values())  # always shown, with or without traffic
LINE_COLOUR: Final = "#0b5cad"  # console.css's --accent (an SVG attribute cannot read the CSS variable everywhere)


# ---- charts --------------------------------------------------------------------------------------------------------


def sparkline(values: Sequence[float | None], label: str, unit: str = "", digits: int = 0, total: bool = False,
              width: int = 240, height: int = 48) -> Markup:
    """A small line chart as inline SVG, scaled from 0 to its maximum; a None (nothing to plot that minute) breaks the
    line, a lone minute is a short dash. `label` is a fixed description ("requests per minute"); the title and
    aria-label add the summary (max, latest and with `total` the sum). Everything inside is numbers and `label`
    (escaped), so it is safe to mark."""
    points = [v for v in values if v is not None]
    n = len(values)
    if points:
        summary = f"{label}, last {n} min: max {_fmt(max(points), unit, digits)}, " \
                  f"latest {_fmt(points[-1], unit, digits)}"
        summary += f", total {_fmt(sum(points), unit, digits)}" if total else ""
    else:
        summary = f"{label}, last {n} min: no data"
    top = max(points, default=0.0) or 1.0
    pad = 2.0  # the stroke stays inside the box at the extremes
    step = (width - 2 * pad) / max(n - 1, 1)
    path: list[str] = []
    drawing = False
    for i, v in enumerate(values):
        if v is None:
            drawing = False
            continue
        x, y = pad + i * step, height - pad - (v / top) * (height - 2 * pad)
        if drawing:
            path.append(f"L{x:.1f} {y:.1f}")
        elif i + 1 < n and values[i + 1] is not None:
            path.append(f"M{x:.1f} {y:.1f}")
        else:
            path.append(f"M{max(x - 2, 0):.1f} {y:.1f}h2")  # a lone minute: a dash ending at its point
        drawing = True
    text = escape(summary)
    return Markup(
        f'<svg class="spark" viewBox="0 0 {width} {height}" preserveAspectRatio="none" role="img" '
        f'aria-label="{text}"><title>{text}</title>'
        f'<line x1="0" y1="{height - 0.5}" x2="{width}" y2="{height - 0.5}" stroke="#d0d7de" '
        f'vector-effect="non-scaling-stroke"/>'
        f'<path d="{"".join(path)}" fill="none" stroke="{LINE_COLOUR}" stroke-width="1.5" stroke-linejoin="round" '
        f'stroke-linecap="round" vector-effect="non-scaling-stroke"/></svg>')


def _fmt(v: float, unit: str, digits: int) -> str:
    return f"{v:,.{digits}f}{unit}"


class Chart(msgspec.Struct, frozen=True):
    svg: Markup
    caption: str  # what it shows and its maximum (the chart has no axis labels)


def chart(values: Sequence[float | None], label: str, caption: str, unit: str = "", digits: int = 0,
          total: bool = False) -> Chart:
    points = [v for v in values if v is not None]
    peak = _fmt(max(points), unit.replace(" ", "\u00a0"), digits) if points else None  # the unit stays with it
    return Chart(sparkline(values, label, unit, digits, total), f"{caption}, max {peak}" if peak else caption)


class RouteCard(msgspec.Struct):
    hour: RouteHour
    anchor: str  # the card's id (an item links to it)
    requests: Chart
    latency: Chart
    fallbacks: Chart | None  # None: the endpoint never answers from a fallback


def anchor_of(route: str) -> str:
    return "route-" + re.sub(r"[^a-z0-9]+", "-", route.lower()).strip("-")


def route_cards(hour: TrafficHour) -> list[RouteCard]:
    """The answer endpoints first (always), then every other /v1/ route with traffic, most requests first."""
    by_route = {r.route: r for r in hour.routes}
    empty = [0] * traffic.MINUTES
    shown = [by_route.get(route) or RouteHour(route, empty, empty, [None] * traffic.MINUTES,
                                              [None] * traffic.MINUTES, 0, 0, 0, None, None)
             for route in ANSWER_ROUTES]
    shown += [r for r in hour.routes if r.route not in ANSWER_ROUTES and r.route.startswith("/v1/")]
    return [RouteCard(
        r, anchor_of(r.route),
        chart(r.requests_per_minute, "requests per minute", "Requests per minute", total=True),
        chart(r.p99_ms_per_minute, "p99 latency per minute", "p99 latency per minute", unit=" ms", digits=1),
        chart([None if x is None else x * 100 for x in r.fallback_rate_per_minute], "fallback rate per minute",
              "Fallback rate per minute", unit=" %", digits=1) if r.answers_with_fallbacks else None)
        for r in shown]


# ---- what needs attention ------------------------------------------------------------------------------------------


class Item(msgspec.Struct, frozen=True):
    level: Literal["bad", "warn", "info"]
    title: str
    detail: str
    link: str
    action: str  # the link's text


def _ago(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def error_items(cards: Sequence[RouteCard]) -> list[Item]:
    out = []
    for card in cards:
        recent = sum(card.hour.errors_per_minute[-ERRORS_RECENT_MINUTES:])
        if recent:
            out.append(Item("bad", f"{card.hour.route} answered {recent:,} times with a 5xx",
                            f"In the last {ERRORS_RECENT_MINUTES} minutes (the service log says why).",
                            f"#{card.anchor}", "Its traffic"))
    return out


def campaign_items(svc: Services, clock: ServiceClock | None) -> list[Item]:
    """Pending approvals (this worker's approvals, refreshed from Redis by the caller)."""
    book = svc.campaigns
    pending = [c for c in book.campaigns.values() if status_of(c, book.approvals.get(c.campaign_id)) == "pending"]
    if not pending:
        return []
    running = sum(c.active_at(clock.now) for c in pending) if clock is not None else 0
    detail = (f"{running} of them run now and are not offered until approved." if running
              else "None of them runs at the service clock's now; none is offered until approved.")
    title = f"{len(pending)} campaign{'s' if len(pending) != 1 else ''} waiting for a decision"
    return [Item("bad" if running else "warn", title, detail, "/console/campaigns", "Decide")]


def experiment_items(found: Sequence[Experiment], now_s: float) -> list[Item]:
    """Running experiments (someone decides when they end) and guardrail stops of the last day."""
    out = []
    for e in sorted(found, key=lambda e: e.created_at, reverse=True):
        link = f"/console/models#experiment-{e.id}"
        if e.running:
            stage = f", ramp stage {e.stage + 1} of {len(e.ramp)}" if e.ramp else ""
            out.append(Item("info", f"Experiment {e.id} running",
                            f"{e.model}: {e.treatment} against {e.control} for {e.share:.0%} of customers{stage}, "
                            f"for {_ago(max(0.0, now_s - e.created_at))}.", link, "Promote or stop"))
        elif e.status == "stopped" and e.ended_by == GUARD_ACTOR and e.ended_at \
                and now_s - e.ended_at <= GUARDRAIL_STOP_RECENT_S:
            out.append(Item("bad", f"Experiment {e.id} stopped by a guardrail",
                            f"{_ago(max(0.0, now_s - e.ended_at))} ago ({e.model} {e.treatment}): {e.reason}.",
                            link, "Review"))
    return out


def flow_items(flow: LiveFlow) -> list[Item]:
    """A stopped live flow, or one so far behind that the streaming feature views are stale."""
    if not flow.ok:
        return [Item("bad", "The live flow is stopped",
                     f"{flow.detail[:1].upper()}{flow.detail[1:]}. The streaming feature views are not updated "
                     "meanwhile.",
                     "/console/features", "Features and stream")]
    if flow.lag_s is not None and flow.lag_s > LAG_ATTENTION_S:
        return [Item("warn", "Streaming feature views are stale",
                     f"The oldest event the live flow has not processed has waited {_ago(flow.lag_s)}: online "
                     "features are that far behind.", "/console/features", "Features and stream")]
    return []


# ---- the page ------------------------------------------------------------------------------------------------------


async def _or_none(make: Callable[[], Awaitable[T]]) -> T | None:
    try:
        return await make()
    except StoreUnavailable:
        return None


async def _live_flow(svc: Services) -> LiveFlow | None:
    max_age_s = svc.settings.live_max_age_s
    try:
        return await svc.store.call(lambda: live_flow_async(svc.redis, max_age_s,
                                                          partitions=svc.settings.stream_partitions))
    except StoreUnavailable:
        return None
    except ResponseError as exc:  # e.g. a Redis older than 6.2 (as /readyz: say so, never a 500)
        return LiveFlow(max_age_s <= 0, f"the live flow's heartbeat could not be read: {exc}", max_age_s=max_age_s)


async def _experiments(svc: Services) -> list[Experiment]:
    return experiments.decode_all(await svc.store.call(lambda: svc.redis.hgetall(EXPERIMENTS)))


class Overview(msgspec.Struct):
    items: list[Item]
    checked: list[str]  # what was looked at (shown when nothing needs attention)
    missing: list[str]  # what Redis did not answer for
    cards: list[RouteCard]
    hour: TrafficHour | None
    clock: ServiceClock | None
    flow: LiveFlow | None


async def gather(svc: Services, operator: Operator) -> Overview:
    merchandiser, engineer = operator.may("merchandiser"), operator.may("ml_engineer")

    async def nothing() -> None:
        return None

    hour, clock, _, found, flow = await asyncio.gather(
        _or_none(lambda: traffic.last_hour(svc.store, svc.pipeline)),
        _or_none(lambda: read_clock(svc, last_known=True)),
        svc.refresh_approvals() if merchandiser else nothing(),  # keeps the last known ones when Redis is away
        _or_none(lambda: _experiments(svc)) if engineer else nothing(),
        _live_flow(svc) if engineer else nothing())
    cards = route_cards(hour) if hour is not None else []
    items, checked = error_items(cards), ["5xx answers"]
    missing = [] if hour is not None else ["the traffic history"]
    if merchandiser:
        items += campaign_items(svc, clock)
        checked.append("campaign approvals")
    if engineer:
        checked += ["experiments", "the live flow"]
        if found is None:
            missing.append("the experiments")
        else:
            items += experiment_items(found, time.time())
        if flow is None:
            missing.append("the live flow")
        else:
            items += flow_items(flow)
    order = {"bad": 0, "warn": 1, "info": 2}
    items.sort(key=lambda i: order[i.level])
    return Overview(items, checked, missing, cards, hour, clock, flow if engineer else None)


class ConsoleOverviewController(Controller):
    path = "/console"
    include_in_schema = False
    guards = (console_guard,)

    @get()
    async def page(self, request: Request, services: Injected) -> Template:
        operator = await operator_of(request)
        overview = await gather(services, operator)
        return render(request, operator, "overview.html", "Overview", o=overview,
                      flush_s=services.settings.console_traffic_flush_s)
